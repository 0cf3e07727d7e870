"""Train K trials that share a model as one vectorized model: on a CPU a small GAN's step is
mostly per-op overhead, so K members stepped together cost far less than K steps.

Nothing here re-implements a model, normalizer, loss or BatchNorm: each member is a real
``trainers.loop.Trainer``, and the ordinary modules run on the members' stacked state under
``vmap`` + ``functional_call`` (or replay that call's recorded graph: trainers.packed_graph).
Design, equivalence and measurements: docs/PACKED.md.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.utils import parametrize

from trainers import normalizers
from trainers.config import ConfigError, TrainConfig
from trainers.diagnostics import gradient_norms
from trainers.loop import Progress, Trainer, TrainResult, write_checkpoint
from trainers.losses import LOSSES, penalty_alpha
from trainers.packed_graph import record
from trainers.packed_layout import pack_layout

__all__ = ["PER_MEMBER_KEYS", "PackedTrainer", "can_pack"]

PER_MEMBER_KEYS = frozenset(
    {"scale", "lr_g", "lr_d", "beta1", "beta2", "seed", "divergence_threshold", "checkpoint_every", "diagnostics"}
)
"""Config keys that may differ between the members of one pack; every other key must be equal."""
PACK_FORMAT = "snsweep-packed/1"
REPLAY_MIN_ITERATIONS = 200
"""Recording a pack's graphs costs 1-3 s, about what replay saves over vmap in 200 steps (docs/PACKED.md)."""


def can_pack(cfgs: Sequence[TrainConfig]) -> tuple[bool, str]:
    """(True, "") when ``cfgs`` can train as one pack, else (False, one line naming each differing key)."""
    if not cfgs:
        return False, "nothing to pack: no configurations"
    d = [c.to_dict() for c in cfgs]
    keys = sorted(k for k in d[0] if k not in PER_MEMBER_KEYS and any(m[k] != d[0][k] for m in d))
    if not keys:
        return True, ""
    detail = "; ".join(f"{k}: member 0 {d[0][k]!r} vs " + ", ".join(f"member {i} {m[k]!r}" for i, m in enumerate(d)
                       if m[k] != d[0][k]) for k in keys)  # fmt: skip
    why = (" (vmap runs one module structure, and normalizers differ in parameters and buffers, e.g. bsn keeps two "
           "power-iteration states per conv where sn keeps one: pack each normalizer separately)")  # fmt: skip
    return False, (f"the configurations do not share a model: differing key(s) {', '.join(keys)} ({detail}); only "
                   f"{', '.join(sorted(PER_MEMBER_KEYS))} may differ within a pack{why * ('normalizer' in keys)}")


class _Adam:
    """torch.optim.Adam (eps 1e-8, no weight decay) over a (K, P) tensor with per-member lr/betas, which
    torch's Adam cannot take (one lr per tensor). Bitwise equal to its single-tensor CPU update: the
    same ops in the same order, bias corrections as Python doubles rounded where torch rounds them."""

    def __init__(self, flat: Tensor, lrs: Sequence[float], beta1s: Sequence[float], beta2s: Sequence[float]):
        self.flat, self.lrs, self.beta1s, self.beta2s = flat, list(lrs), list(beta1s), list(beta2s)
        self.m, self.v = torch.zeros_like(flat), torch.zeros_like(flat)
        self._tmp, self._denom = torch.empty_like(flat), torch.empty_like(flat)  # reused: no page faults
        self.steps = 0
        self._w1, self._b2 = self._col([1 - b for b in beta1s]), self._col(beta2s)
        self._c2 = self._col([1 - b for b in beta2s])

    def _col(self, values: Sequence[float]) -> Tensor:
        return torch.tensor(list(values), dtype=self.flat.dtype, device=self.flat.device).view(-1, 1)

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        self.steps += 1
        s, tmp, denom = float(self.steps), self._tmp, self._denom
        neg_step = self._col([-(lr / (1 - b1**s)) for lr, b1 in zip(self.lrs, self.beta1s, strict=True)])
        self.m.lerp_(grad, self._w1)  # exp_avg.lerp_(grad, 1 - beta1)
        torch.mul(self._c2, grad, out=tmp)
        self.v.mul_(self._b2).addcmul_(tmp, grad)  # exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)
        torch.sqrt(self.v, out=denom)
        denom.div_(self._col([(1 - b2**s) ** 0.5 for b2 in self.beta2s])).add_(1e-8)  # (sqrt / bc2_sqrt) + eps
        torch.mul(neg_step, self.m, out=tmp)
        self.flat.addcdiv_(tmp, denom)  # param.addcdiv_(exp_avg, denom, value=-step_size)


class _Call(nn.Module):
    """``functional_call`` target that runs ``fn(module, *args)`` with the stacked tensors swapped in."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.m = module

    def forward(self, fn: Callable, *args: Any) -> Any:
        return fn(self.m, *args)


class _Stack:
    """One network of all K members: the ordinary module run on stacked tensors under vmap. Parameters
    live in one flat (K, P) tensor (Adam is a few ops for the net), seen as (K, *shape) views, 4-D
    weights channels-last per member (oneDNN's NHWC kernels); buffers are stacked copies."""

    def __init__(self, modules: list[nn.Module], layout: bool = True, wide_bn: bool = False):
        template = copy.deepcopy(modules[0])
        self.K, self.call = len(modules), _Call(pack_layout(template, wide_bn) if layout else template)
        params, buffers = stack_module_state(modules)  # type: ignore[arg-type]
        self.shapes = [p.shape[1:] for p in params.values()]
        self.flat = torch.cat([self._stored(p.detach()).reshape(self.K, -1) for p in params.values()], 1)
        self.leaves = [t.requires_grad_(True) for t in self.split(self.flat)]
        self.params = {f"m.{n}": t for n, t in zip(params, self.leaves, strict=True)}
        self.frozen = {n: t.detach() for n, t in self.params.items()}  # same storage, no autograd
        self.buffers = {f"m.{n}": b for n, b in buffers.items()}
        self._grad: Tensor | None = None
        self.graphs: dict[tuple, Callable] = {}  # recorded calls (replay)

    @staticmethod
    def _stored(t: Tensor) -> Tensor:  # (K, c0, c1, kh, kw) in storage order (K, c0, kh, kw, c1)
        return t.permute(0, 1, 3, 4, 2) if t.dim() == 5 else t

    def split(self, x: Tensor) -> list[Tensor]:
        """A (K, P) tensor laid out like ``flat`` (gradient, Adam moment) as (K, *shape) views, in order."""
        out, offset = [], 0
        for shape in self.shapes:
            part, offset = x[:, offset : offset + shape.numel()], offset + shape.numel()
            if len(shape) == 4:
                part = part.view(self.K, shape[0], shape[2], shape[3], shape[1]).permute(0, 1, 4, 2, 3)
            out.append(part.view(self.K, *shape))
        return out

    def __call__(self, fn: Callable, *args: Tensor | None, dims: Sequence[int | None] = (), frozen: bool = False,
                 replay: bool = False) -> Any:
        """``fn(module, *args)`` for every member under vmap; with ``replay``, the recorded graph of
        this call (recorded now if new: :func:`trainers.packed_graph.record`)."""
        def one(params: dict, buffers: dict, *args: Any) -> Any:
            return functional_call(self.call, (params, buffers), (fn, *args), tie_weights=False)

        in_dims = (0, 0, *(tuple(dims) or (0,) * len(args)))
        inputs = (self.frozen if frozen else self.params, self.buffers, *args)
        if not replay:
            return vmap(one, in_dims=in_dims)(*inputs)
        key = (fn, frozen, tuple(dims), self.call.training, tuple(a is None for a in args))
        if key not in self.graphs:
            self.graphs[key] = record(vmap(one, in_dims=in_dims), inputs, list(self.buffers.values()))
        return self.graphs[key](*inputs)

    def grad(self, loss: Tensor) -> Tensor:
        """d loss / d flat as a (K, P) tensor (written into one reused buffer)."""
        grads = torch.autograd.grad(loss, self.leaves, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, self.leaves, strict=True)]
        self._grad = torch.cat([self._stored(g).reshape(self.K, -1) for g in grads], 1, out=self._grad)
        return self._grad

    @torch.no_grad()
    def copy(self, k: int, module: nn.Module, into_module: bool) -> None:
        """Member k's parameters and buffers into ``module`` (or back from it)."""
        ours = {**self.params, **self.buffers}
        for name, t in (*module.named_parameters(), *module.named_buffers()):
            (t.copy_(ours[f"m.{name}"][k]) if into_module else ours[f"m.{name}"][k].copy_(t))


# --- what vmap runs, member by member, on the ordinary modules ------------------------------------
def _generate(G: nn.Module, z: Tensor) -> Tensor:
    return G(z)


def _generate_twice(G: nn.Module, z: Tensor) -> Tensor:
    """G(z), then the running-statistics update of the solo G step's second, identical forward
    (replayed on the recorded BatchNorm inputs: bitwise the same, without G's convolutions)."""
    seen: list[tuple[nn.Module, Tensor]] = []
    bns = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((m, args[0].detach()))) for m in bns]
    try:
        out = G(z)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        for m, x in seen:
            m(x)
    return out


def _d_loss(loss: Any, gp_weight: float, D: nn.Module, real: Tensor, fake: Tensor, alpha: Tensor | None) -> Tensor:
    with parametrize.cached():  # D(real), D(fake) and the penalty's D share the normalized weights
        return loss.d_loss(D, real, fake, gp_weight, alpha)


def _prime(D: nn.Module) -> tuple:
    """Every normalizer's train-mode forward once, which caches its power iteration for the current
    (W, u), as ``update`` leaves it: recorded graphs read that cache (they were recorded hitting it)."""
    for _, layer in normalizers.layers(D):
        layer.weight  # noqa: B018 (the parametrization runs on access)
    return ()


def _update(D: nn.Module) -> tuple:
    normalizers.update(D)  # exactly one persisted power iteration per D update
    return ()


def _update_and_g_loss(loss: Any, D: nn.Module, fake: Tensor) -> Tensor:
    normalizers.update(D)
    return loss.g_loss(D(fake))


class PackedTrainer:
    """K trials of one model trained together. ``members[k]`` is member k's ``Trainer``: its bookkeeping
    (step, history, best, status) is live, its modules hold the packed state after :meth:`member_state_dict`."""

    replay: bool | None = None
    """Replay each call's graph recorded on its first call, or run vmap on every call (False). None: replay
    when ``iterations >= REPLAY_MIN_ITERATIONS`` (a config-only rule, so a resumed run decides alike)."""

    def __init__(self, cfgs: Sequence[TrainConfig]):
        cfgs = list(cfgs)
        ok, why = can_pack(cfgs)
        if not ok:
            raise ConfigError(f"cannot pack these {len(cfgs)} configurations: {why}")
        self.cfg, self.K = cfgs[0], len(cfgs)
        self.device, self.loss = torch.device(self.cfg.device), LOSSES[self.cfg.resolved_loss]
        self.members: list[Trainer] = []
        self.gens: list[torch.Generator] = []  # each member's z/alpha stream, continuing its global RNG
        with torch.random.fork_rng(devices=self._devices()):
            for c in cfgs:
                self.members.append(Trainer(c, like=self.members[0] if self.members else None))
                self.gens.append(torch.Generator(self.device).set_state(self._global_rng().get_state()))
        if self.cfg.normalizer == "snconv":  # SNConv learns its input size at the first forward: now
            for t in self.members:
                normalizers.materialize(t.D, t.generate(t.eval_z[:1]).to(self.device))
        self.G = _Stack([t.G for t in self.members], wide_bn=True)
        self.D = _Stack([t.D for t in self.members])
        betas = [c.beta1 for c in cfgs], [c.beta2 for c in cfgs]
        self.opt_g = _Adam(self.G.flat, [c.lr_g for c in cfgs], *betas)
        self.opt_d = _Adam(self.D.flat, [c.lr_d for c in cfgs], *betas)
        self.D(_prime)
        self.step = 0
        self._d_fn = functools.partial(_d_loss, self.loss, self.cfg.gp_weight)
        self._g_fn = functools.partial(_update_and_g_loss, self.loss)
        self._snapshots: dict[int, list[Tensor]] = {}  # frozen (diverged) members' rows

    @property
    def history(self) -> list[list[dict[str, float]]]:
        return [t.history for t in self.members]

    @property
    def _replay(self) -> bool:
        return self.cfg.iterations >= REPLAY_MIN_ITERATIONS if self.replay is None else self.replay

    def _running(self) -> list[int]:
        return [k for k, t in enumerate(self.members) if t.status != "diverged"]

    def _devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    def _global_rng(self) -> torch.Generator:
        """The generator a solo run draws z and alpha from (the device's default)."""
        if self.device.type == "cuda":
            return torch.cuda.default_generators[self.device.index or torch.cuda.current_device()]
        return torch.default_generator

    # --- one iteration ---------------------------------------------------------------
    def _draws(self, fn: Callable[[int], Tensor]) -> Tensor:
        """One draw per running member from its own stream (zeros for frozen members), stacked."""
        out = {k: fn(k) for k in self._running()}
        like = next(iter(out.values()))
        return torch.stack([out.get(k, torch.zeros_like(like)) for k in range(self.K)]).to(self.device)

    def train_step(self) -> tuple[list[float], list[float]]:
        """One iteration for every member (``Trainer.train_step``): n_dis D updates, one G update."""
        cfg, b, ms = self.cfg, self.cfg.batch_size, self.members
        for i in range(cfg.n_dis):
            real = self._draws(lambda k: ms[k].source.sample(b, ms[k].data_rng))
            z = self._draws(lambda k: torch.randn(b, cfg.latent_dim, generator=self.gens[k], device=self.device))
            if i == cfg.n_dis - 1:  # this G(z) is also the G step's (same z, same weights): keep its graph
                fake_g = self.G(_generate_twice, z, replay=self._replay)
                fake = fake_g.detach()
            else:
                with torch.no_grad():
                    fake = self.G(_generate, z, replay=self._replay)
            alpha = None  # the penalty's weights, drawn after z as the solo loss draws them
            if cfg.resolved_loss == "wgan_gp":
                alpha = self._draws(lambda k, x=real: penalty_alpha(x[k], generator=self.gens[k]))
            dims = (0, 0, None if alpha is None else 0)
            loss_d = self.D(self._d_fn, real, fake, alpha, dims=dims, replay=self._replay)
            self._grad_d = self.D.grad(loss_d.sum())
            self.opt_d.step(self._grad_d)
            if i < cfg.n_dis - 1:
                self.D(_update, replay=self._replay)
        # the last D update's power iteration, then the G step with D's weights constant (the solo
        # loop discards D's gradients from it)
        loss_g = self.D(self._g_fn, fake_g, frozen=True, replay=self._replay)
        self.opt_g.step(self.G.grad(loss_g.sum()))
        if self._snapshots:  # frozen members neither change nor influence anyone: restore their rows
            with torch.no_grad():
                for k, saved in self._snapshots.items():
                    for t, row in zip(self._rows(), saved, strict=True):
                        t[k].copy_(row)
        return loss_d.detach().tolist(), loss_g.detach().tolist()

    def _freeze(self, k: int) -> None:
        """Keep diverged member k's rows as they are now; every later step puts them back."""
        self._snapshots[k] = [row[k].clone() for row in self._rows()]

    def _rows(self) -> list[Tensor]:
        return [self.G.flat, *self.G.buffers.values(), self.D.flat, *self.D.buffers.values(),
                self.opt_g.m, self.opt_g.v, self.opt_d.m, self.opt_d.v]  # fmt: skip

    # --- evaluation and the loop ------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: Tensor, chunk: int = 256) -> Tensor:
        """Eval-mode samples of every member for the same latents: (K, n, *sample)."""
        self.G.call.eval()
        try:
            return torch.cat([self.G(_generate, c.to(self.device), dims=(None,)).cpu() for c in z.split(chunk)], 1)
        finally:
            self.G.call.train()

    def run(self, report: Callable[[int, list[Progress | None]], None] | None = None) -> list[TrainResult]:
        """Train every member to ``iterations``; one ``TrainResult`` per member, in order. ``report(step,
        progress)`` runs at each evaluation step and where a member diverges; ``progress[k]`` is member k's
        ``Progress`` (made by ``Trainer.record``), None once member k has stopped."""
        t0, ms, walls = time.perf_counter(), self.members, [0.0] * self.K
        if report is not None and self.step >= self.cfg.iterations and any(self.history):  # restored at the end
            report(self.step, [self._own(k, t.closing_progress()) if k in self._running() and t.history else None
                               for k, t in enumerate(ms)])  # fmt: skip
        while self.step < self.cfg.iterations and self._running():
            running = self._running()
            is_eval = ms[running[0]].eval_due()
            losses = self.train_step()
            self.step += 1
            # a member that diverges now is evaluated where it stopped, as a solo run is
            diverging = any(ms[k].bad_loss(losses[0][k], losses[1][k]) is not None for k in running)
            samples = self.generate(ms[0].eval_z) if is_eval or diverging else None
            progress: list[Progress | None] = [None] * self.K
            for k in running:
                grads = self._gradient_norms(k) if is_eval and ms[k].cfg.diagnostics else {}
                p = ms[k].record(losses[0][k], losses[1][k], grads, is_eval, None if samples is None else samples[k])
                if ms[k].status == "diverged":
                    self._freeze(k)
                if p is not None:
                    progress[k], walls[k] = self._own(k, p), time.perf_counter() - t0 if p.done else 0.0
            if report is not None and any(p is not None for p in progress):
                report(self.step, progress)
        return [t.result(walls[k] or time.perf_counter() - t0) for k, t in enumerate(ms)]

    def _own(self, k: int, p: Progress) -> Progress:
        p.save_checkpoint = functools.partial(self.save_member, k)
        return p

    def _gradient_norms(self, k: int) -> dict[str, float]:
        """Member k's modules get its packed state and last D gradients, as the solo loop measures them
        (``Trainer.record`` then adds its diagnostics)."""
        t = self._sync(k, into_member=True)
        for p, g in zip(t.D.parameters(), self.D.split(self._grad_d), strict=True):
            p.grad = g[k].clone()
        return gradient_norms(t.D)

    # --- checkpoints: every member in Trainer's format ------------------------------------
    @contextlib.contextmanager
    def _member_rng(self, k: int):
        """Inside, the global RNG is member k's stream (``Trainer.state_dict``/``load_state_dict`` use it)."""
        with torch.random.fork_rng(devices=self._devices()):
            self._global_rng().set_state(self.gens[k].get_state())
            yield
            self.gens[k].set_state(self._global_rng().get_state())

    @torch.no_grad()
    def _sync(self, k: int, into_member: bool) -> Trainer:
        """Copy member k's packed state (modules, Adam moments and steps) into its Trainer, or back."""
        t = self.members[k]
        for stack, module, opt, adam, n in ((self.G, t.G, self.opt_g, t.opt_g, t.step),
                                            (self.D, t.D, self.opt_d, t.opt_d, t.step * self.cfg.n_dis)):  # fmt: skip
            stack.copy(k, module, into_module=into_member)
            for p, m, v in zip(module.parameters(), stack.split(opt.m), stack.split(opt.v), strict=True):
                if into_member:
                    adam.state.pop(p, None)
                    if n > 0:
                        adam.state[p] = {"step": torch.tensor(float(n)), "exp_avg": m[k].clone(),
                                         "exp_avg_sq": v[k].clone()}  # fmt: skip
                else:
                    st = adam.state.get(p, {})
                    m[k].copy_(st.get("exp_avg", torch.zeros_like(m[k])))
                    v[k].copy_(st.get("exp_avg_sq", torch.zeros_like(v[k])))
        return t

    def member_state_dict(self, k: int) -> dict:
        """Member k's checkpoint in ``Trainer.state_dict``'s format (``Trainer.load`` accepts it)."""
        t = self._sync(k, into_member=True)
        with self._member_rng(k):
            return {**t.state_dict(), "status": t.status, "error": t.error}  # Trainer ignores the last two

    def state_dict(self) -> dict:
        """The whole pack: every member's ``Trainer``-format checkpoint plus the pack's step."""
        return {"format": PACK_FORMAT, "step": self.step, "members": [self.member_state_dict(k) for k in range(self.K)]}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`'s output (``torch.save`` it to keep it)."""
        if state.get("format") != PACK_FORMAT:
            raise ConfigError(f"not a packed checkpoint (format {state.get('format')!r}, expected {PACK_FORMAT!r})")
        if len(state["members"]) != self.K:
            raise ConfigError(f"refusing to resume: the checkpoint packs {len(state['members'])} members, not {self.K}")
        self.step = int(state["step"])
        for k, (t, member) in enumerate(zip(self.members, state["members"], strict=True)):
            with self._member_rng(k):
                t.load_state_dict(member, f"member {k}")
            t.status = "diverged" if member.get("status") == "diverged" else "completed"
            t.error = member.get("error", "")
            self._sync(k, into_member=False)
            if t.status != "diverged" and t.step != self.step:
                raise ConfigError(f"member {k} is at step {t.step}, the pack at {self.step}")
        self.D(_prime)
        self._snapshots = {}
        for k in set(range(self.K)) - set(self._running()):
            self._freeze(k)
        self.opt_g.steps, self.opt_d.steps = self.step, self.step * self.cfg.n_dis

    def save_member(self, k: int, directory: Path) -> Path:
        """Write member k alone as ``directory/checkpoint.pt``, resumable by ``trainers.loop.Trainer``."""
        return write_checkpoint(self.member_state_dict(k), directory)
