import numpy as np
import torch

from samplegen.model.baselines import PCABaseline


def test_pca_matches_numpy_svd_reconstruction():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 4, 25)).astype(np.float32)
    pca = PCABaseline.fit(torch.from_numpy(x), 5)
    rec = pca.reconstruct(torch.from_numpy(x)).numpy()
    flat = x.reshape(30, -1)
    mean = flat.mean(0)
    u, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
    ref = ((flat - mean) @ vt[:5].T @ vt[:5] + mean).reshape(x.shape)
    assert np.allclose(rec, ref, atol=1e-4)


def test_pca_is_exact_on_data_of_that_rank():
    rng = np.random.default_rng(1)
    basis = rng.standard_normal((3, 40))
    x = rng.standard_normal((20, 3)) @ basis + 2.0
    x = torch.tensor(x, dtype=torch.float32)
    assert torch.allclose(PCABaseline.fit(x, 3).reconstruct(x), x, atol=1e-3)
    assert not torch.allclose(PCABaseline.fit(x, 1).reconstruct(x), x, atol=1e-1)
