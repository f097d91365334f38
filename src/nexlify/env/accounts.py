"""N trading accounts on one market and the one trading step they all share.

``Accounts`` holds the state of N long-only spot accounts as arrays and applies one action per
account per step. The same code runs on three array types:

- ``"numpy"``: N accounts as numpy arrays (training and backtests on the CPU);
- ``"torch"``: N accounts as torch tensors on any device (a GPU run keeps everything on the GPU);
- ``"python"``: one account as plain Python floats (the single Gymnasium env, where numpy's
  per-call overhead would cost more than the arithmetic).

Fills and costs come from ``nexlify.env.portfolio`` and rewards from ``nexlify.env.rewards``, so
every backend follows exactly the trajectory of ``Portfolio`` fed the same actions.

Timing (no look-ahead): the observation at row t holds features of the candle that closed at t. The
action chosen on it is filled at the open of candle t+1 and the account is marked at the close of
t+1. An episode runs from the first to the last row of the market, or, with ``episode_bars``, for
that many steps from a row drawn per account and episode from ``window_seed`` (``window_starts``).
With ``staggered`` the market is a loop (its last row followed by its first, joined as
``join_markets`` joins two markets) and the accounts of a round start their episodes at evenly
spaced rows around it, one phase drawn from ``window_seed``: N accounts stepped together then trade
N different stretches of the market, yet each still walks every row of it once per whole-market
episode. Reaching an episode's end is truncation; equity falling to ``ruin_fraction`` of the
initial balance is termination. ``trade_penalty`` is subtracted from the return of every step with
a fill and ``risk_aversion`` times the step's squared log return from every step, before the reward
is made of that return (so "vol_scaled" scales them, and "differential_sharpe" and
"differential_sortino" take their ratio of the costed return).

``step`` resets finished accounts in the same step ("same-step autoreset") and returns one
``AccountStep`` record on every backend; ``advance`` is the step without the reset. An account ruined
before its episode's last row gets a fresh balance at the row it reached (``refund_rows``) rather
than going back to the start, so every account still walks each row of its window once per episode:
early, heavily exploring training loses its accounts often, and restarting them at the first row
would replay the start of the window and never reach its end.
"""

from __future__ import annotations

import math
import operator
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch

from nexlify.config import REWARD_MODES
from nexlify.data.features import ACCOUNT_FEATURE_NAMES
from nexlify.data.market import MarketSlice, join_markets
from nexlify.env.actions import BUY, BUY_HALF, HALF, SELL, SELL_HALF
from nexlify.env.portfolio import buy_fill, sell_fill
from nexlify.env.rewards import DSR_ETA, differential_sharpe_step, differential_sortino_step, volatility_reward_scale
from nexlify.errors import ConfigError

BACKENDS = ("numpy", "torch", "python")
# Per-account state: (name, dtype, value after a reset; None = the initial balance).
_STATE: tuple[tuple[str, str, float | None], ...] = (
    ("t", "int64", 0), ("cash", "float64", None), ("units", "float64", 0.0), ("level", "float64", 0.0),
    ("entry", "float64", 0.0),
    ("equity", "float64", None), ("peak", "float64", None), ("fees_paid", "float64", 0.0),
    ("slippage_paid", "float64", 0.0), ("trades", "int64", 0), ("invalid", "int64", 0),
    ("dsr_mean", "float64", 0.0), ("dsr_mean_square", "float64", 0.0),
    ("end", "int64", 0), ("episodes_started", "int64", 0),
)
# Set by _place_episodes (where each episode starts and ends) and counted across resets, not reset.
_PLACED = ("t", "end", "episodes_started")
# splitmix64's multipliers as signed 64-bit numbers: numpy and torch int64 arithmetic wraps alike.
_MIX_1, _MIX_2 = 0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64)


def window_starts(seed: int, account: Any, episode: Any, span: int) -> Any:
    """Pseudo-random first rows in ``[0, span)``, one per (account, episode), from ``seed`` alone.

    A hash rather than a random-number stream: the same seed gives the same windows on numpy and
    torch, in any order of resets, and after a resume, with no generator state to save.
    """
    x = account * 1_000_003 + episode * 7_919 + seed * 104_729
    x = (x ^ (x >> 30)) * _MIX_1
    x = (x ^ (x >> 27)) * _MIX_2
    x = x ^ (x >> 31)
    return x % span


def account_features(position: Any, price: Any, entry_price: Any, equity: Any, peak_equity: Any,
                     where: Any = None) -> tuple[Any, Any, Any]:
    """The 3 account features (``ACCOUNT_FEATURE_NAMES``): position level (0 flat, 0.5 half, 1 long; a
    bool "is long" flag is the same for all-in positions), return of the open position since its
    average fill price (0 when flat), and drawdown of equity from its peak.

    Works on Python numbers (``where=None``) and on numpy arrays or torch tensors (pass ``np.where``
    or ``torch.where``). The environment and live trading both build their states with it.
    """
    if where is None:
        unrealized = price / entry_price - 1.0 if position > 0 else 0.0
    else:
        held = position > 0
        unrealized = where(held, price / where(held, entry_price, 1.0) - 1.0, 0.0)
    return position, unrealized, equity / peak_equity - 1.0


class AccountStep(NamedTuple):
    """One step of N accounts, the same record on every backend.

    ``obs`` is what the agent sees next: for an account whose episode just ended, the first
    observation of its next episode. ``final_obs`` is every account's real next observation (before
    any reset), the one to store as the transition's next state. ``info`` holds the account numbers
    after the step and before any reset (``equity``, ``cash``, ``position``, ``price``, ``fees_paid``,
    ``slippage_paid``, ``trades``, ``invalid_actions``, ``step``).
    """

    obs: Any
    reward: Any  # float32
    terminated: Any
    truncated: Any
    final_obs: Any
    info: dict[str, Any]

    @property
    def done(self) -> Any:
        return self.terminated | self.truncated


class _Python:
    """One account as Python scalars."""

    where = staticmethod(lambda cond, a, b: a if cond else b)
    maximum = staticmethod(max)
    log = staticmethod(math.log)
    logical_not = staticmethod(operator.not_)
    features_where = None

    def vector(self, values: Any, dtype: str) -> Any:
        return np.asarray(values, dtype=dtype).tolist()

    def fill(self, n: int, value: float, dtype: str) -> Any:
        return {"int64": int, "float64": float, "bool": bool}[dtype](value)

    def table(self, values: np.ndarray) -> np.ndarray:
        return values

    def to_list(self, value: Any) -> Any:
        return value


class _Arrays:
    """The element-wise functions numpy and torch both name alike, taken from ``module``."""

    def __init__(self, module: Any) -> None:
        self.where = self.features_where = module.where
        self.maximum = module.maximum
        self.log = module.log
        self.logical_not = module.logical_not


class _Numpy(_Arrays):
    def __init__(self) -> None:
        super().__init__(np)

    def vector(self, values: Any, dtype: str) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=dtype)

    def fill(self, n: int, value: float, dtype: str) -> np.ndarray:
        return np.full(n, value, dtype=dtype)

    def table(self, values: np.ndarray) -> np.ndarray:
        return values

    def to_list(self, value: np.ndarray) -> list:
        return value.tolist()


class _Torch(_Arrays):
    def __init__(self, device: torch.device) -> None:
        super().__init__(torch)
        self.device = device

    def vector(self, values: Any, dtype: str) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=getattr(torch, dtype), device=self.device)

    def fill(self, n: int, value: float, dtype: str) -> torch.Tensor:
        return torch.full((n,), value, dtype=getattr(torch, dtype), device=self.device)

    def table(self, values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, device=self.device)

    def to_list(self, value: torch.Tensor) -> list:
        return value.cpu().tolist()


class Accounts:
    """``num_envs`` accounts trading ``market`` together; see the module docstring.

    ``backend`` is ``"numpy"``, ``"torch"`` (on ``device``) or ``"python"`` (one account). ``xp`` holds
    that backend's few array functions (``where``, ``maximum``, ``log``, ``logical_not``, and
    ``fill(n, value, dtype)``, ``vector(values, dtype)``, ``to_list(array)``) for code that keeps
    per-account arrays alongside, like the trainer.
    """

    def __init__(
        self,
        market: MarketSlice,
        num_envs: int = 1,
        *,
        initial_balance: float = 10_000.0,
        fee: float = 0.001,
        slippage: float = 0.0005,
        reward_mode: str = "log_return",
        ruin_fraction: float = 0.1,
        backend: str = "numpy",
        device: str | torch.device | None = None,
        episode_bars: int | None = None,
        window_seed: int = 0,
        trade_penalty: float = 0.0,
        risk_aversion: float = 0.0,
        dsr_eta: float = DSR_ETA,
        half_orders: bool = False,
        staggered: bool = False,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs must be a positive integer, got {num_envs!r}")
        if reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be one of {', '.join(REWARD_MODES)}; got {reward_mode!r}")
        if not 0.0 < dsr_eta <= 1.0:
            raise ConfigError(f"dsr_eta must be in (0, 1]; got {dsr_eta!r}")
        if not initial_balance > 0:
            raise ConfigError(f"initial_balance must be > 0, got {initial_balance!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if backend == "python" and num_envs != 1:
            raise ConfigError("the python backend holds exactly one account; use numpy or torch for more")
        if len(market) < 2:
            raise ConfigError("the market slice needs at least 2 rows to take one step")
        if episode_bars is not None and not 1 <= episode_bars <= len(market) - 1:
            raise ConfigError(f"episode_bars {episode_bars} does not fit the {len(market) - 1} steps of the "
                              "training window; use a smaller episode_bars or a longer window")
        if (episode_bars is not None or staggered) and backend == "python":
            raise ConfigError("random or staggered episode windows need the numpy or torch backend")
        # A staggered market is a loop: the arrays below hold it twice, so a window that wraps is one stretch.
        path = join_markets([market, market]) if staggered else market
        self.market = market
        self.num_envs = num_envs
        self.backend = backend
        self.device = torch.device(device or "cpu") if backend == "torch" else None
        self.xp: Any = {"numpy": _Numpy, "python": _Python}.get(backend, lambda: _Torch(self.device))()
        self.initial_balance, self.fee, self.slippage = float(initial_balance), fee, slippage
        self.reward_mode, self.ruin_fraction = reward_mode, ruin_fraction
        # The differential ratios' step, chosen once (advance runs every bar); None: the log-return
        # rewards. differential_sortino keeps the moving mean square of the losing steps in the
        # dsr_mean_square slot, so checkpoints keep one layout.
        self._ratio_step = (None if reward_mode in ("log_return", "vol_scaled")
                            else partial(differential_sortino_step, where=self.xp.where)
                            if reward_mode == "differential_sortino" else differential_sharpe_step)
        self._ruin_equity = ruin_fraction * float(initial_balance)
        self._last_row = len(path) - 1
        self.episode_bars, self.window_seed, self.trade_penalty = episode_bars, int(window_seed), trade_penalty
        self.staggered = bool(staggered)
        self.risk_aversion, self.dsr_eta = risk_aversion, dsr_eta
        # The half orders (action mode target_half) cost a few more array operations per step, so
        # only accounts built for them take them.
        self.half_orders = bool(half_orders)
        self.open = self.xp.vector(path.open, "float64")
        self.close = self.xp.vector(path.close, "float64")
        self._reward_scale = (self.xp.vector(volatility_reward_scale(path.close), "float64")
                              if reward_mode == "vol_scaled" else None)
        self.n_market = market.features.shape[1]
        self.observation_size = self.n_market + len(ACCOUNT_FEATURE_NAMES)
        # Zero-padded so one gather yields whole observation rows; the account columns are filled after.
        padded = np.zeros((len(path), self.observation_size), dtype=np.float32)
        padded[:, : self.n_market] = path.features
        self._obs_rows = self.xp.table(padded)
        self.reset()

    # --- episodes ------------------------------------------------------------------------------
    def reset(self) -> Any:
        """Every account back to the start of a fresh episode with all cash; returns the observations."""
        for name, dtype, value in _STATE:
            setattr(self, name, self.xp.fill(self.num_envs, self.initial_balance if value is None else value,
                                              dtype))
        self._place_episodes(True if self.backend == "python" else self.xp.fill(self.num_envs, True, "bool"))
        return self.observe()

    def reset_rows(self, mask: Any) -> None:
        """Start a fresh episode for the accounts where ``mask`` is True."""
        self.refund_rows(mask)
        self._place_episodes(mask)

    def _restart_finished(self, done: Any, terminated: Any) -> None:
        """A fresh balance for every finished account; a new window only for those that reached the
        end of theirs (an account ruined before it goes on where it stands)."""
        self.refund_rows(done)
        self._place_episodes(done & ~(terminated & (self.t < self.end)))

    def refund_rows(self, mask: Any) -> None:
        """A fresh balance and no position for the accounts where ``mask`` is True, at the row and in
        the window they are in."""
        where = self.xp.where
        for name, _, value in _STATE:
            if name not in _PLACED:
                setattr(self, name, where(mask, self.initial_balance if value is None else value,
                                          getattr(self, name)))

    def _place_episodes(self, mask: Any) -> None:
        """Where the new episodes of the accounts in ``mask`` run: the whole market (``episode_bars``
        None), or ``episode_bars`` steps from a row drawn by ``window_starts`` for each account and
        episode, so accounts stepped together trade different stretches of the market; with
        ``staggered``, from evenly spaced rows of the loop (``_staggered_starts``)."""
        where = self.xp.where
        if self.staggered:
            first = self._staggered_starts()
            last = first + (self.episode_bars or len(self.market) - 1)
        elif self.episode_bars is None:
            first, last = 0, self._last_row
        else:
            accounts = self.xp.vector(np.arange(self.num_envs), "int64")
            span = self._last_row - self.episode_bars + 1
            first = window_starts(self.window_seed, accounts, self.episodes_started, span)
            last = first + self.episode_bars
        self.t = where(mask, first, self.t)
        self.end = where(mask, last, self.end)
        self.episodes_started = self.episodes_started + mask

    def _staggered_starts(self) -> Any:
        """Account i's first row: a phase drawn from the seed and the episode count, plus i/N of the loop.

        Accounts reset together share their episode count, so they share the phase and stay evenly
        spaced; the phase moves from one episode to the next so rounds do not repeat their starts.
        """
        loop = len(self.market)
        accounts = self.xp.vector(np.arange(self.num_envs), "int64")
        phase = window_starts(self.window_seed, self.xp.fill(self.num_envs, 0, "int64"), self.episodes_started, loop)
        return (phase + accounts * loop // self.num_envs) % loop

    def observe(self) -> Any:
        """Observations: market features of row t, then the account features (float32)."""
        obs = self._obs_rows[self.t]
        if self.backend == "python":
            obs = obs.copy()  # a row of the table, not a gathered copy
        n = self.n_market
        position, unrealized, drawdown = account_features(
            self.level, self.close[self.t], self.entry, self.equity, self.peak, self.xp.features_where)
        obs[..., n] = position
        obs[..., n + 1] = unrealized
        obs[..., n + 2] = drawdown
        return obs

    # --- the trading step ------------------------------------------------------------------------
    def advance(self, actions: Any) -> tuple[Any, Any, Any]:
        """Apply one order per account (``nexlify.env.actions``: 0 hold, 1 buy, 2 sell, 3 buy half,
        4 sell half); returns (reward, terminated, truncated).

        An order that cannot move the position (a buy at level 1, a sell when flat) is a no-op,
        counted in ``invalid``. No account is reset here, even one whose episode ended (see ``step``).
        """
        xp = self.xp
        where, not_ = xp.where, xp.logical_not
        t_next = self.t + 1
        open_price = self.open[t_next]
        cash, units, entry, level = self.cash, self.units, self.entry, self.level
        fees_paid, slippage_paid = self.fees_paid, self.slippage_paid
        can_buy, can_sell = level < 1.0, level > 0.0
        if self.half_orders:
            wants_buy_all, wants_sell_all = actions == BUY, actions == SELL
            wants_buy = wants_buy_all | (actions == BUY_HALF)
            wants_sell = wants_sell_all | (actions == SELL_HALF)
            refused = 0
        else:
            wants_buy, wants_sell = actions == BUY, actions == SELL
            refused = actions > SELL  # a half order to accounts built without them: counted, not traded
        buy, sell = wants_buy & can_buy, wants_sell & can_sell
        traded = buy | sell
        self.invalid = self.invalid + ((wants_buy & not_(can_buy)) | (wants_sell & not_(can_sell)) | refused)
        # One account that does not trade this step keeps every number: skip the fills (arrays always
        # compute them; the masks below leave the rows that do not trade unchanged).
        if self.backend != "python" or traded:
            if self.half_orders:
                # The share of the cash a buy spends and of the units a sell sells: all of it for an
                # all-in order and for a half-step that completes the move (half to long, half to
                # flat), half of it for a half-step from flat or from long.
                spend = cash * where(wants_buy_all, 1.0, HALF / where(can_buy, 1.0 - level, 1.0))
                sell_share = where(wants_sell_all, 1.0, HALF / where(can_sell, level, 1.0))
                new_level = where(buy, where(wants_buy_all, 1.0, level + HALF),
                                  where(sell, where(wants_sell_all, 0.0, level - HALF), level))
            else:
                spend, sell_share = cash, 1.0
                new_level = where(buy, 1.0, where(sell, 0.0, level))
            bought_units, buy_fee, fill_price = buy_fill(spend, open_price, self.fee, self.slippage)
            slippage_paid = where(buy, slippage_paid + bought_units * (fill_price - open_price), slippage_paid)
            if self.half_orders:
                # The position's average fill price (a buy from flat: its own fill price, exactly).
                held = units > 0.0
                fill_price = where(held, (units * entry + bought_units * fill_price)
                                   / where(held, units + bought_units, 1.0), fill_price)
                bought_units = units + bought_units
            entry = where(buy, fill_price, entry)
            units = where(buy, bought_units, units)
            fees_paid = where(buy, fees_paid + buy_fee, fees_paid)
            cash = where(buy, cash - spend, cash)  # exactly 0.0 when all of it is spent

            sold_units = units * sell_share if self.half_orders else units
            cash_in, sell_fee = sell_fill(sold_units, open_price, self.fee, self.slippage)
            slippage_paid = where(sell, slippage_paid + sold_units * (open_price * self.slippage), slippage_paid)
            cash = where(sell, cash + cash_in, cash)
            fees_paid = where(sell, fees_paid + sell_fee, fees_paid)
            if self.half_orders:
                closed = sell & (new_level <= 0.0)
                units = where(sell, where(closed, 0.0, units - sold_units), units)
                entry = where(closed, 0.0, entry)
            else:
                units = where(sell, 0.0, units)
                entry = where(sell, 0.0, entry)
            self.trades = self.trades + traded
            self.cash, self.units, self.entry, self.level = cash, units, entry, new_level
            self.fees_paid, self.slippage_paid = fees_paid, slippage_paid

        equity = cash + units * self.close[t_next]
        step_return = xp.log(equity / self.equity)
        # The switching penalty and the variance charge are costs on the step's return: with
        # differential_sharpe they go in before the Sharpe is taken, so a fill weighs there as a cost
        # of that size does (charged after it, on a reward ~100x a log return, they would not count).
        costed = step_return
        if self.trade_penalty:
            # A cost-aware reward: each fill costs this much more return than its fee already does,
            # to discourage churn (the equity, and so every backtest, is unchanged).
            costed = costed - self.trade_penalty * traded
        if self.risk_aversion:
            # Mean-variance: a step's squared log return costs this much more, so a position held
            # through wild bars must earn more than one held through calm ones.
            costed = costed - self.risk_aversion * step_return * step_return
        if self._ratio_step is None:
            reward = costed
        else:
            reward, self.dsr_mean, self.dsr_mean_square = self._ratio_step(
                costed, self.dsr_mean, self.dsr_mean_square, eta=self.dsr_eta
            )
        if self._reward_scale is not None:
            reward = reward * self._reward_scale[self.t]  # the volatility known when the action was chosen
        self.equity = equity
        self.peak = xp.maximum(self.peak, equity)
        self.t = t_next
        terminated = equity <= self._ruin_equity
        truncated = not_(terminated) & (t_next >= self.end)
        return reward, terminated, truncated

    def step(self, actions: Any) -> AccountStep:
        """``advance``, then start a new episode for every account whose episode ended."""
        if self.backend == "python":
            raise ConfigError("step() resets finished accounts in place; a single account uses advance()")
        reward, terminated, truncated = self.advance(actions)
        done = terminated | truncated
        info = self.info()  # references the pre-reset arrays: reset_rows builds new ones
        final_obs = self.observe()
        if self.backend == "torch":
            # Resetting unconditionally avoids a device-to-host sync to ask whether anyone finished.
            self._restart_finished(done, terminated)
            obs = self.observe()
            reward = reward.float()
        else:
            obs = final_obs
            if done.any():
                self._restart_finished(done, terminated)
                obs = self.observe()
            reward = reward.astype(np.float32)
        return AccountStep(obs, reward, terminated, truncated, final_obs, info)

    def info(self) -> dict[str, Any]:
        """The account numbers now: equity, cash, position (units) and its level, price, costs, trade
        counts, row."""
        return {
            "step": self.t, "equity": self.equity, "cash": self.cash, "position": self.units, "level": self.level,
            "price": self.close[self.t], "fees_paid": self.fees_paid, "slippage_paid": self.slippage_paid,
            "trades": self.trades, "invalid_actions": self.invalid,
        }

    # --- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, list]:
        """Every account's state as plain lists (JSON-safe), for checkpoints taken mid-episode."""
        return {name: self.xp.to_list(getattr(self, name)) for name, _, _ in _STATE}

    def load_state_dict(self, state: dict[str, list]) -> None:
        """Restore ``state_dict()`` output (same number of accounts)."""
        if "level" not in state:  # saved before half positions existed: every position was all-in
            units = state["units"]
            state = {**state, "level": [float(u > 0.0) for u in units] if isinstance(units, list)
                     else float(units > 0.0)}
        for name, dtype, _ in _STATE:
            values = state[name]
            if self.backend != "python" and len(values) != self.num_envs:
                raise ConfigError(f"account state holds {len(values)} accounts, this has {self.num_envs}")
            setattr(self, name, self.xp.vector(values, dtype))
