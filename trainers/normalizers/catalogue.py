"""The catalogue: one ``MethodInfo`` per normalizer name, in the order reports list them.

Plain data, importable without torch: the sweep service lists and validates names from it before
anything trains. Each entry names how it is built (``build``); :attr:`MethodInfo.factory` imports
the parametrizations on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPTIONS: dict[str, Any] = {"eps": 1e-12, "grad_through_uv": False}
"""Valid keyword options of :func:`apply` and their defaults (accepted by every method)."""


@dataclass(frozen=True)
class MethodInfo:
    """One catalogue entry: what it is, where it comes from, how it is built."""

    name: str
    description: str
    """One line, for ``sweeper normalizers`` and reports."""
    paper: str
    """Where the method is defined, e.g. "§2, Miyato et al."."""
    formula: str
    build: tuple[str, str | None]
    """(``none`` | ``lecun`` | a spectral base ``sn``/``snconv``/``bsn``, gamma ``same``/``diff``/None)."""
    normalized: bool = True
    """False for ``none`` and ``lecun`` (no parametrization, ``update`` is a no-op)."""
    gamma: str | None = None
    """``same`` / ``diff`` for the learnable-γ variants (trained with WGAN-GP, App. O)."""

    @property
    def factory(self) -> Callable[..., Any]:
        """``factory(module, scale, options) -> module``: registers this method's parametrizations."""
        from trainers.normalizers import parametrizations as p

        base, gamma = self.build
        if base == "none":
            return p._none
        if base == "lecun":
            return p._lecun
        return p._spectral(base, gamma)


_S1 = "σ(W_{c_out×c_in·kh·kw})"
_S2 = "σ(W_{c_in×c_out·kh·kw})"


def _info(name: str, description: str, paper: str, formula: str, build: tuple, **kw: Any) -> MethodInfo:
    return MethodInfo(name, description, paper, formula, build, **kw)


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in [
        _info(
            "none",
            "no normalization (the 'Without SN' baseline); scale is ignored",
            "§1.1 / App. J-K, Lin et al.",
            "W̄ = W",
            ("none", None),
            normalized=False,
        ),
        _info(
            "sn",
            "spectral norm of the reshaped kernel (SNw); SSN when scale != 1",
            "§2, Miyato et al.; §5.2 (SSN), Lin et al.",
            f"W̄ = c·W / {_S1}",
            ("sn", None),
        ),
        _info(
            "snconv",
            "spectral norm of the convolution operator for the layer's input size",
            "§2 and §4, Lin et al. (power iteration of Gouk et al.)",
            "W̄ = c·W / ‖w̃‖_sp (conv operator)",
            ("snconv", None),
        ),
        _info(
            "bsn",
            "bidirectional SN: mean of both kernel reshapes' norms; BSSN when scale != 1",
            "§5.1 (BSN), §5.2 (BSSN), Lin et al.",
            f"W̄ = c·W / (({_S1} + {_S2}) / 2)",
            ("bsn", None),
        ),
        _info(
            "sn_gamma_same",
            "SN times one trainable γ shared by all layers (weights and biases)",
            "App. O, Lin et al. (after Miyato et al.)",
            f"W̄ = γ·c·W / {_S1}; b̄ = γ·b",
            ("sn", "same"),
            gamma="same",
        ),
        _info(
            "sn_gamma_diff",
            "SN times a trainable γ per layer (weights and biases)",
            "App. O, Lin et al. (after Miyato et al.)",
            f"W̄_l = γ_l·c·W_l / {_S1}; b̄_l = γ_l·b_l",
            ("sn", "diff"),
            gamma="diff",
        ),
        _info(
            "bsn_gamma_same",
            "BSN times one trainable γ shared by all layers (weights and biases)",
            "App. O / Table 6, Lin et al.",
            f"W̄ = γ·c·W / (({_S1} + {_S2}) / 2); b̄ = γ·b",
            ("bsn", "same"),
            gamma="same",
        ),
        _info(
            "bsn_gamma_diff",
            "BSN times a trainable γ per layer (weights and biases)",
            "App. O / Table 6, Lin et al.",
            f"W̄_l = γ_l·c·W_l / (({_S1} + {_S2}) / 2); b̄_l = γ_l·b_l",
            ("bsn", "diff"),
            gamma="diff",
        ),
        _info(
            "lecun",
            "no normalization; weights re-initialised N(0, (scale/sqrt(fan_in))^2), zero biases",
            "§5.2, Fig. 8, App. M, Lin et al.",
            "W ~ N(0, c²/fan_in), b = 0",
            ("lecun", None),
            normalized=False,
        ),
    ]
}
