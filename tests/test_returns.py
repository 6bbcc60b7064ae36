"""GAE and bootstrap targets: against a naive double loop, a hand-worked table, n-step returns."""

import numpy as np
import pytest
import tensorflow as tf

from rlnorm.a2c import compute_gae, next_state_values


def random_rollout(seed: int, n_steps: int, n_envs: int):
    rng = np.random.default_rng(seed)
    f = lambda: rng.normal(size=(n_steps, n_envs)).astype(np.float32)  # noqa: E731
    terminated = rng.random((n_steps, n_envs)) < 0.2
    truncated = rng.random((n_steps, n_envs)) < 0.2  # may coincide: terminated wins
    return dict(
        rewards=f(),
        values=f(),
        last_values=rng.normal(size=n_envs).astype(np.float32),
        final_values=f(),
        terminated=terminated,
        truncated=truncated,
    )


NEXT_KEYS = ("values", "last_values", "truncated", "final_values")


def naive_gae(r, gamma, lam):
    """Forward double loop: A_t = sum_{k >= t} (gamma lam)^(k-t) delta_k, up to the first done."""
    n_steps, n_envs = r["rewards"].shape
    adv = np.zeros((n_steps, n_envs))
    for b in range(n_envs):
        for t in range(n_steps):
            for k in range(t, n_steps):
                if r["terminated"][k, b]:
                    next_v = 0.0
                elif r["truncated"][k, b]:
                    next_v = r["final_values"][k, b]
                elif k + 1 < n_steps:
                    next_v = r["values"][k + 1, b]
                else:
                    next_v = r["last_values"][b]
                delta = r["rewards"][k, b] + gamma * next_v - r["values"][k, b]
                adv[t, b] += (gamma * lam) ** (k - t) * delta
                if r["terminated"][k, b] or r["truncated"][k, b]:
                    break
    return adv


def run_gae(r, gamma, lam):
    """next_state_values, then compute_gae, on what `r` holds (NumPy arrays or TF tensors)."""
    nxt = next_state_values(*(r[k] for k in NEXT_KEYS))
    dones = r["terminated"] | r["truncated"]
    return compute_gae(r["rewards"], r["values"], nxt, r["terminated"], dones, gamma, lam)


def test_next_state_values_against_a_loop():
    r = random_rollout(0, 7, 4)
    expected = np.zeros((7, 4), np.float32)
    for t in range(7):
        for b in range(4):
            if r["truncated"][t, b]:
                expected[t, b] = r["final_values"][t, b]
            else:
                expected[t, b] = r["values"][t + 1, b] if t < 6 else r["last_values"][b]
    nxt = next_state_values(r["values"], r["last_values"], r["truncated"], r["final_values"])
    np.testing.assert_array_equal(nxt, expected)


@pytest.mark.parametrize(("seed", "n_steps", "n_envs"), [(1, 5, 8), (2, 16, 3), (3, 1, 4)])
@pytest.mark.parametrize("lam", [1.0, 0.95, 0.0])
def test_gae_matches_naive_double_loop(seed, n_steps, n_envs, lam):
    r = random_rollout(seed, n_steps, n_envs)
    gamma = 0.9
    adv, ret = run_gae(r, gamma, lam)
    expected = naive_gae(r, gamma, lam)
    assert adv.shape == ret.shape == (n_steps, n_envs)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, expected + r["values"], rtol=1e-5, atol=1e-5)


# Hand-worked table, gamma = 0.5, T = 4, B = 2.
# env 0: terminated at t=1, truncated at t=2 with V(final obs) = 8 (not V(s_3) = 40).
# env 1: no episode end; bootstraps from last_values = 2.
#   env 0 deltas: d0 = 1 + .5*20 - 10 = 1, d1 = 2 + 0 - 20 = -18 (no bootstrap),
#                 d2 = 3 + .5*8 - 30 = -23, d3 = 4 + .5*50 - 40 = -11
#   env 1 deltas: -1.5, -1, -0.5, 1
HAND = dict(
    rewards=np.array([[1, 1], [2, 1], [3, 1], [4, 1]], np.float32),
    values=np.array([[10, 4], [20, 3], [30, 2], [40, 1]], np.float32),
    last_values=np.array([50, 2], np.float32),
    final_values=np.array([[0, 0], [0, 0], [8, 0], [0, 0]], np.float32),
    terminated=np.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool),
    truncated=np.array([[0, 0], [0, 0], [1, 0], [0, 0]], bool),
)
HAND_EXPECTED = {
    # lambda = 1 (gamma * lambda = 0.5): A0 = 1 + .5 * (-18); env 1: 1, -.5 + .5, -1 + 0, ...
    1.0: np.array([[-8, -2], [-18, -1], [-23, 0], [-11, 1]], np.float64),
    # lambda = 0.5 (gamma * lambda = 0.25): A0 = 1 + .25 * (-18); env 1: 1, -.25, -1.0625, ...
    0.5: np.array([[-3.5, -1.765625], [-18, -1.0625], [-23, -0.25], [-11, 1]], np.float64),
}
HAND_RETURNS = {
    1.0: np.array([[2, 2], [2, 2], [7, 2], [29, 2]], np.float64),
    0.5: np.array([[6.5, 2.234375], [2, 1.9375], [7, 1.75], [29, 2]], np.float64),
}


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_gae_hand_worked_table(lam):
    adv, ret = run_gae(HAND, 0.5, lam)
    np.testing.assert_array_equal(adv, HAND_EXPECTED[lam])
    np.testing.assert_array_equal(ret, HAND_RETURNS[lam])


def test_lambda_one_equals_n_step_discounted_returns():
    r = random_rollout(4, 9, 5)
    gamma = 0.97
    n_steps, n_envs = r["rewards"].shape
    expected = np.zeros((n_steps, n_envs))
    for b in range(n_envs):
        ret = r["last_values"][b]
        for t in reversed(range(n_steps)):
            if r["terminated"][t, b]:
                ret = 0.0
            elif r["truncated"][t, b]:
                ret = r["final_values"][t, b]
            ret = r["rewards"][t, b] + gamma * ret
            expected[t, b] = ret
    _, returns = run_gae(r, gamma, 1.0)
    np.testing.assert_allclose(returns, expected, rtol=1e-5, atol=1e-5)


def test_tf_tensors_give_the_same_numbers():
    r = random_rollout(5, 6, 3)
    adv_np, ret_np = run_gae(r, 0.9, 0.8)
    as_tf = {k: tf.constant(v) for k, v in r.items()}
    nxt = next_state_values(*(as_tf[k] for k in NEXT_KEYS))
    assert tf.is_tensor(nxt)
    np.testing.assert_array_equal(nxt.numpy(), next_state_values(*(r[k] for k in NEXT_KEYS)))
    # Eagerly, and inside a compiled graph (the compiled backend's path).
    for gae in (run_gae, tf.function(run_gae)):
        adv_tf, ret_tf = gae(as_tf, 0.9, 0.8)
        assert tf.is_tensor(adv_tf) and tf.is_tensor(ret_tf)
        np.testing.assert_allclose(adv_tf.numpy(), adv_np, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ret_tf.numpy(), ret_np, rtol=1e-6, atol=1e-6)
