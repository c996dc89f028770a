"""End-to-end embedding quality: self-supervised LSTM embeddings separate
behaviour processes that mean features cannot separate by construction.

Data: :func:`streamkm.loadgen.synthetic.behaviour_sequences` -- 4 Markov chains over
4 event types whose transition matrices are relabelings of one another
(doubly stochastic, so every process has the same uniform marginal at every
step and the same window-mean distribution up to a permutation of the event
types); only the order of events differs.  The encoder is trained on
unlabeled windows with the next-event objective, held-out windows are
embedded (mean pooling over time) and clustered with ``StreamingKMeans``
fed in mini-batches; the adjusted Rand index against the true process is
compared with clustering the windows' mean features.

Measured numbers and the command are in docs/lstm.md section 7.
"""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from streamkm.cluster import StreamingKMeans
from streamkm.loadgen.synthetic import behaviour_events, behaviour_sequences
from streamkm.sequence import EventWindower, LSTMEncoder
from streamkm.sequence.train import train_encoder

N_PROC = 4
T = 20          # events per window
F = 8           # features per event
H = 16          # hidden size
N_TRAIN = 800   # unlabeled training windows
N_EVAL = 800    # held-out windows
EPOCHS = 8


def cluster_streaming(E, *, seed=0, batch=50):
    """StreamingKMeans over E in mini-batches (as the daemon does), then predict."""
    km = StreamingKMeans(n_clusters=N_PROC, init_size=200, seed=seed)
    for start in range(0, len(E), batch):
        km.partial_fit(E[start:start + batch])
    assert km.is_initialized_ and km.n_seen_ == len(E)
    return km.predict(E)


@pytest.fixture(scope="module")
def trained():
    X, _ = behaviour_sequences(N_TRAIN, n_processes=N_PROC, length=T, n_features=F, seed=0)
    enc = LSTMEncoder(F, H, seed=0)
    untrained = LSTMEncoder(F, H, seed=0)
    result = train_encoder(enc, X, objective="next_event", epochs=EPOCHS, batch_size=32,
                           lr=1e-2, clip_norm=1.0, val_fraction=0.1, seed=0)
    return enc, untrained, result


@pytest.fixture(scope="module")
def held_out():
    return behaviour_sequences(N_EVAL, n_processes=N_PROC, length=T, n_features=F, seed=1)


def test_training_lowered_the_loss(trained):
    _, _, result = trained
    hist = result.history
    assert [r["epoch"] for r in hist] == list(range(1, EPOCHS + 1))
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]


def test_lstm_embeddings_separate_processes_mean_features_do_not(trained, held_out):
    enc, untrained, _ = trained
    X, y = held_out
    E = enc.embed(X, pooling="mean", normalize=True)
    assert E.shape == (N_EVAL, H) and E.dtype == np.float32
    ari_lstm = adjusted_rand_score(y, cluster_streaming(E))
    ari_mean = adjusted_rand_score(y, cluster_streaming(X.mean(axis=1)))
    ari_untrained = adjusted_rand_score(
        y, cluster_streaming(untrained.embed(X, pooling="mean", normalize=True)))
    ari_last = adjusted_rand_score(
        y, cluster_streaming(enc.embed(X, pooling="last", normalize=True)))
    print(f"\nARI lstm(mean pooling)={ari_lstm:.3f} lstm(last pooling)={ari_last:.3f} "
          f"mean-features={ari_mean:.3f} untrained-lstm={ari_untrained:.3f}")
    assert ari_lstm >= 0.9
    assert abs(ari_mean) < 0.05          # chance level: mean pooling of features cannot separate
    assert ari_lstm > ari_mean + 0.8
    assert ari_untrained < 0.3           # the separation comes from training, not the architecture


def test_event_stream_windows_cluster_by_process(trained):
    """behaviour_events -> EventWindower -> embed -> StreamingKMeans, per key."""
    enc, _, _ = trained
    keys, ts, X, process_of_key = behaviour_events(64, 4 * T, n_processes=N_PROC, n_features=F,
                                                   seed=2)
    w = EventWindower(F, kind="tumbling", size=T)
    batches = [w.add(keys[i:i + 1000], ts[i:i + 1000], X[i:i + 1000])
               for i in range(0, len(keys), 1000)]
    batches = [b for b in batches if b is not None]
    win_keys = [k for b in batches for k in b.keys]
    assert len(win_keys) == 64 * 4 and w.flush() is None
    E = np.concatenate([enc.embed(b.X, lengths=b.lengths, pooling="mean", normalize=True)
                        for b in batches])
    truth = np.array([process_of_key[k] for k in win_keys])
    ari = adjusted_rand_score(truth, cluster_streaming(E, batch=32))
    print(f"\nARI event-stream windows={ari:.3f}")
    assert ari >= 0.9
