"""Q-networks: a plain ReLU MLP with an optional dueling head, layer norm and dropout.

There is no batch-norm, and dropout (config key ``dropout``) is not tied to ``train()`` / ``eval()``
mode: it applies only when the caller passes a random generator, which the agent does in the one
forward pass that is learned from. Acting, targets, backtests and live trading call the network
without one, so they can never be noisier than intended (the original agent acted with dropout on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nexlify.config import TrainingConfig


class QNetwork(nn.Module):
    """MLP mapping a state vector to one Q-value per action.

    ``hidden_layers`` lists the hidden widths (e.g. ``(128, 64)``). With ``dueling=True`` the last
    hidden layer feeds a value stream V(s) and an advantage stream A(s, a), combined as
    ``Q = V + A - mean(A)`` (Wang et al., 2016) so V and A stay identifiable.

    With ``n_quantiles`` N > 0 (QR-DQN, Dabney et al., 2018) the head gives N quantiles of the return
    per action (``quantiles``, at the midpoints ``(i + 0.5) / N``), and ``forward`` their mean, the
    Q-value: acting, ensembles and backtests read Q-values either way.

    With ``layer_norm=True`` each hidden layer is ``Linear -> LayerNorm -> ReLU``: every hidden
    vector is centred and scaled to unit variance (then a learned gain and shift) before its ReLU,
    so the Q-values' inputs keep one scale however large the weights grow while the targets move.

    With ``dropout`` p > 0, ``forward`` and ``quantiles`` given a ``noise`` generator zero each hidden
    unit with probability p and scale the rest by 1 / (1 - p) (inverted dropout), drawing from that
    generator only; without one they compute the deterministic network.
    """

    def __init__(
        self,
        state_size: int,
        action_size: int,
        hidden_layers: Sequence[int],
        dueling: bool = False,
        n_quantiles: int = 0,
        dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if state_size < 1 or action_size < 1:
            raise ValueError(f"state_size and action_size must be >= 1, got {state_size}, {action_size}")
        if not hidden_layers or any(int(w) < 1 for w in hidden_layers):
            raise ValueError(f"hidden_layers must be positive widths, got {tuple(hidden_layers)}")
        self.state_size = int(state_size)
        self.action_size = int(action_size)
        self.hidden_layers = tuple(int(w) for w in hidden_layers)
        self.dueling = bool(dueling)
        if n_quantiles < 0:
            raise ValueError(f"n_quantiles must be >= 0, got {n_quantiles}")
        self.n_quantiles = int(n_quantiles)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.layer_norm = bool(layer_norm)
        outputs = max(1, self.n_quantiles)  # values per action (one: the expected return)

        layers: list[nn.Module] = []
        width_in = self.state_size
        for width in self.hidden_layers:
            layers.append(nn.Linear(width_in, width))
            if self.layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(nn.ReLU())
            width_in = width
        self.body = nn.Sequential(*layers)
        # forward() walks these directly: calling each nn.Module costs microseconds of Python,
        # which for nets this small is a sizeable share of a forward pass.
        self._hidden: list[nn.Linear] = [m for m in layers if isinstance(m, nn.Linear)]
        self._norms: list[nn.LayerNorm | None] = (
            [m for m in layers if isinstance(m, nn.LayerNorm)] if self.layer_norm else [None] * len(self._hidden))
        if self.dueling:
            self.value = nn.Linear(width_in, outputs)
            self.advantage = nn.Linear(width_in, self.action_size * outputs)
        else:
            self.head = nn.Linear(width_in, self.action_size * outputs)

    def _features(self, states: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        features = states
        keep = 1.0 - self.dropout
        for layer, norm in zip(self._hidden, self._norms, strict=True):
            features = F.linear(features, layer.weight, layer.bias)
            if norm is not None:
                features = F.layer_norm(features, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            features = torch.relu(features)
            if noise is not None and self.dropout:
                # The mask comes from the caller's generator, not torch's global one, so a seeded
                # run is reproducible and resumes bit-exactly whatever else draws random numbers.
                mask = torch.empty_like(features).bernoulli_(keep, generator=noise)
                features = features * mask / keep
        return features

    def forward(self, states: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        """Q-values of shape ``(batch, action_size)`` for states of shape ``(batch, state_size)``;
        with ``noise``, through the dropout the network was built with."""
        features = self._features(states, noise)
        if self.n_quantiles:
            return self._quantile_heads(features).mean(dim=2)
        if not self.dueling:
            return F.linear(features, self.head.weight, self.head.bias)
        advantage = F.linear(features, self.advantage.weight, self.advantage.bias)
        value = F.linear(features, self.value.weight, self.value.bias)
        return value + advantage - advantage.mean(dim=1, keepdim=True)

    def quantiles(self, states: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        """Return quantiles ``(batch, action_size, n_quantiles)``; only for ``n_quantiles`` > 0."""
        if not self.n_quantiles:
            raise ValueError("this network predicts expected returns, not quantiles (n_quantiles = 0)")
        return self._quantile_heads(self._features(states, noise))

    def _quantile_heads(self, features: torch.Tensor) -> torch.Tensor:
        per_action = (features.shape[0], self.action_size, self.n_quantiles)
        if not self.dueling:
            return F.linear(features, self.head.weight, self.head.bias).view(per_action)
        advantage = F.linear(features, self.advantage.weight, self.advantage.bias).view(per_action)
        value = F.linear(features, self.value.weight, self.value.bias).unsqueeze(1)
        return value + advantage - advantage.mean(dim=1, keepdim=True)


class HostQFunction:
    """The same Q-function evaluated with numpy on views of a CPU network's own parameters.

    For acting on the CPU: a forward of a few dozen rows through torch costs ~100 us of per-op
    dispatch; numpy's matmuls on the same memory cost about a third of that. The views share storage
    with the parameters, so in-place optimizer steps and ``load_state_dict`` are seen at once; new
    parameter tensors (a different network) are noticed by their data pointers and re-viewed.
    """

    def __init__(self, network: QNetwork) -> None:
        self.network = network
        heads = [network.value, network.advantage] if network.dueling else [network.head]
        self._linears: list[nn.Linear] = [*network._hidden, *heads]
        # Each hidden layer's norm (gain, shift, eps), or None; read as views like the linears.
        self._norm_modules = network._norms
        # Every module whose weight and bias are viewed, listed once: _views runs on every act.
        self._viewed: list[nn.Module] = [*self._linears, *(n for n in self._norm_modules if n is not None)]
        self._pointers: tuple[int, ...] = ()
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []
        self._norm_views: list[tuple[np.ndarray, np.ndarray, float] | None] = []

    def _views(self) -> list[tuple[np.ndarray, np.ndarray]]:
        # Reading each layer's weight and bias directly: module.parameters() walks the module tree,
        # which costs more than the whole numpy forward.
        pointers = tuple(t.data_ptr() for m in self._viewed for t in (m.weight, m.bias))
        if pointers != self._pointers:
            # Transposed views once, so each call is a plain x @ W.
            self._layers = [(m.weight.detach().numpy().T, m.bias.detach().numpy()) for m in self._linears]
            self._norm_views = [None if n is None else (n.weight.detach().numpy(), n.bias.detach().numpy(), n.eps)
                                for n in self._norm_modules]
            self._pointers = pointers
        return self._layers

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Q-values (float32, shape ``(batch, actions)``) for float32 states ``(batch, state_size)``."""
        layers = self._views()
        hidden = len(self.network._hidden)
        x = states
        for (weight, bias), norm in zip(layers[:hidden], self._norm_views, strict=True):
            x = x @ weight
            x += bias
            if norm is not None:
                gain, shift, eps = norm
                x -= x.mean(axis=1, keepdims=True)
                x /= np.sqrt((x * x).mean(axis=1, keepdims=True) + np.float32(eps))
                x *= gain
                x += shift
            np.maximum(x, 0.0, out=x)
        if self.network.n_quantiles:
            return self._quantile_means(x, layers[hidden:])
        if not self.network.dueling:
            weight, bias = layers[hidden]
            return x @ weight + bias
        (w_value, b_value), (w_adv, b_adv) = layers[hidden:]
        advantage = x @ w_adv + b_adv
        return (x @ w_value + b_value) + advantage - advantage.mean(axis=1, keepdims=True)

    def _quantile_means(self, x: np.ndarray, heads: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """A QR-DQN head's Q-values: each action's quantiles, averaged."""
        per_action = (x.shape[0], self.network.action_size, self.network.n_quantiles)
        if not self.network.dueling:
            (weight, bias), = heads
            return (x @ weight + bias).reshape(per_action).mean(axis=2)
        (w_value, b_value), (w_adv, b_adv) = heads
        advantage = (x @ w_adv + b_adv).reshape(per_action)
        values = (x @ w_value + b_value)[:, None, :] + advantage - advantage.mean(axis=1, keepdims=True)
        return values.mean(axis=2)


def build_q_network(config: TrainingConfig, state_size: int, action_size: int) -> QNetwork:
    """The Q-network for ``config.model_size`` (widths from the guide's table), ``config.dueling``,
    ``config.n_quantiles``, ``config.dropout`` and ``config.layer_norm``."""
    return QNetwork(state_size, action_size, config.hidden_layers, dueling=config.dueling,
                    n_quantiles=config.n_quantiles, dropout=config.dropout, layer_norm=config.layer_norm)


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
