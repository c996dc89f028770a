"""Assertion rewriting for the shared StreamingKMeans test helpers."""

import pytest

pytest.register_assert_rewrite("tests.cluster.streaming_helpers")
