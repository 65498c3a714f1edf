"""kNN classifier: matches a brute-force reference, chunking-invariant, robust to k > bank size."""

import numpy as np
import torch

from bench.knn import knn_predict, knn_top1


def _reference(train, labels, test, num_classes, k, t):
    """Per-sample numpy loop, the definition the vectorized code must reproduce."""
    tr = train / np.linalg.norm(train, axis=1, keepdims=True)
    te = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for q in te:
        sim = tr @ q
        top = np.argsort(-sim, kind="stable")[: min(k, len(tr))]
        scores = np.zeros(num_classes)
        np.add.at(scores, labels[top], np.exp(sim[top] / t))
        preds.append(int(np.argmax(scores)))
    return np.array(preds)


def _data(n_train=300, n_test=97, d=16, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n_train, d, generator=g), torch.randint(0, c, (n_train,), generator=g),
            torch.randn(n_test, d, generator=g), torch.randint(0, c, (n_test,), generator=g))


def test_matches_bruteforce_reference():
    tr, ytr, te, _ = _data()
    for k, t in ((200, 0.1), (20, 0.07), (1, 0.5)):
        got = knn_predict(tr, ytr, te, 5, k=k, temperature=t)
        ref = _reference(tr.double().numpy(), ytr.numpy(), te.double().numpy(), 5, k, t)
        assert got.dtype == torch.int64
        assert (got.numpy() == ref).mean() >= 0.99  # float32 vs float64 may flip a near-tie


def test_chunking_invariance():
    tr, ytr, te, _ = _data()
    small = knn_predict(tr, ytr, te, 5, chunk_size=7)
    assert torch.equal(small, knn_predict(tr, ytr, te, 5, chunk_size=10**6))


def test_k_larger_than_bank():
    tr, ytr, te, _ = _data(n_train=12)
    got = knn_predict(tr, ytr, te, 5, k=200)
    ref = _reference(tr.double().numpy(), ytr.numpy(), te.double().numpy(), 5, 200, 0.1)
    assert got.shape == (97,) and (got.numpy() == ref).mean() >= 0.99


def test_separable_is_perfect():
    g = torch.Generator().manual_seed(1)
    centers = torch.eye(4, 8) * 10
    ytr, yte = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (50,), generator=g)
    tr = centers[ytr] + 0.1 * torch.randn(200, 8, generator=g)
    te = centers[yte] + 0.1 * torch.randn(50, 8, generator=g)
    assert knn_top1(tr, ytr, te, yte, 4, k=20) == 100.0
