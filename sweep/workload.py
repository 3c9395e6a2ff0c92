"""Request-length workloads for context-length routing (MODEL.md section 4).

A workload is the distribution of request lengths ``L = prompt + output`` tokens. Whatever its
source (a CDF file, a file of requests, a parametric law, a shipped preset), it is held in one
form: a **piecewise-linear CDF** on ascending breakpoints ``tokens`` (float, tokens, all > 0) with
values ``cdf`` (non-decreasing, ``cdf[0] == 0``, ``cdf[-1] == 1``), plus ``output_share``, the
fraction of all tokens that are output tokens (0.2 unless given). Below ``tokens[0]`` the CDF is 0
and above ``tokens[-1]`` it is 1, so the support is ``[tokens[0], tokens[-1]]`` and no mass sits
outside the breakpoints. The density is piecewise constant, so every pool statistic the fleet
code needs is closed-form array maths (:func:`cdf_at`, :func:`partial_moments`,
:func:`pool_stats`), written in ``jax.numpy`` so that it traces, vmaps and differentiates with
respect to the pool boundaries.

Output tokens are a fixed share of each request: ``output = output_share * L`` and
``prompt = (1 - output_share) * L``. Within any pool the mean output is therefore
``output_share * E[L | pool]`` and the squared coefficient of variation of output, prompt and
total length are the same number. For a requests file, ``output_share`` is the token-weighted
share ``sum(output) / sum(prompt + output)``, which makes the fleet-wide mean output exact; the
per-pool split is then the same share (a file whose output fraction varies with length is
approximated).

Sources and the decisions each one makes:

- :func:`from_cdf_json` -- a JSON list of ``[tokens, cumulative_fraction]`` breakpoints. A first
  breakpoint with a fraction above 0 means that fraction of requests is no longer than that
  length: a breakpoint ``(MIN_TOKENS, 0)`` (1 token, the shortest request) is prepended, which
  spreads that mass uniformly over ``(1, tokens[0]]``.
- :func:`from_requests` -- a CSV or JSONL file of individual requests. Each integer length ``L``
  is spread uniformly over ``(L - 1/2, L + 1/2]`` (a continuity correction that keeps the mean
  exact and adds 1/12 token^2 to the second moment). Up to 256 distinct lengths this is the
  exact representation (at most 512 breakpoints); beyond that, the sorted distinct lengths are
  grouped into at most 169 contiguous groups (a new group at every 1/85 of the mass and at every
  1/85 of the log-length range) and each group gets two uniform pieces split at the group's
  mean, with masses chosen so that each group's mass *and* mean are exact. The CDF is exact at
  every group edge and the overall mean (hence output share and mean output) is exact.
- :func:`parametric` -- ``lognormal`` (median, sigma, optional max) or ``mixture`` of lognormals,
  truncated to ``[1, max]`` tokens and renormalised, sampled exactly (``math.erfc``) on a
  log-spaced grid of 512 breakpoints from 1 token to ``max``; linear in between. Without ``max``
  the grid ends at the law's ``1 - 1e-9`` quantile (``z = 6``). Breakpoint values are exact; the
  linear interpolation between them biases the raw moments up by a relative
  ``delta**2 / 12 * r * (r + 1)`` for ``E[L**r]`` to leading order (``delta = ln(max) / 511``, the
  log-grid step), less a boundary term where the truncation at ``max`` cuts a lot: ``+8.9e-5`` on
  the mean and ``+2.7e-4`` on ``E[L**2]`` at max = 128K. The tests check this prediction.
- Presets -- ``sweep/data/workloads/presets.toml``: synthetic parametric laws, flagged so.

Every bad input raises :class:`sweep.errors.SpecError`; for files the message names the file, the
1-based line number and the reason.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernels.lengths import PoolStats, cdf_at, partial_moments, pool_stats
from sweep.errors import SpecError

__all__ = [
    "DEFAULT_OUTPUT_SHARE",
    "GRID_POINTS",
    "MAX_REQUEST_BREAKPOINTS",
    "MIN_TOKENS",
    "PRESETS_FILE",
    "PROMPT_ALIASES",
    "OUTPUT_ALIASES",
    "PoolStats",
    "Workload",
    "cdf_at",
    "from_cdf_json",
    "from_requests",
    "from_spec",
    "list_presets",
    "load_preset",
    "parametric",
    "partial_moments",
    "pool_stats",
]

DEFAULT_OUTPUT_SHARE = 0.2
"""Output tokens as a fraction of all tokens when a source does not say (MODEL.md section 4)."""

MIN_TOKENS = 1.0
"""Shortest request (tokens): lower end of parametric grids and of a prepended CDF breakpoint."""

GRID_POINTS = 512
"""Breakpoints of a discretised parametric law (log-spaced from MIN_TOKENS to max)."""

MAX_REQUEST_BREAKPOINTS = 512
"""Most breakpoints an empirical (requests-file) workload gets."""

_TAIL_Z = 6.0  # without `max`, a parametric grid ends at the 1 - Phi(-6) ~ 1 - 1e-9 quantile
_LAST_TOL = 1e-9  # a file's last cumulative fraction may differ from 1 by this much (snapped)
_EXACT_LENGTHS = MAX_REQUEST_BREAKPOINTS // 2  # distinct lengths kept exactly (2 points each)
_MASS_GROUPS = 85  # grouped mode: new group every 1/85 of the mass ...
_LOG_GROUPS = 85  # ... and every 1/85 of the log-length range (<= 169 groups, <= 3 points each)

PROMPT_ALIASES = ("prompt_tokens", "input_tokens", "prompt_len", "input_len")
"""Accepted names (case-insensitive) of the prompt-length column / JSONL key."""
OUTPUT_ALIASES = ("output_tokens", "output_len", "completion_tokens")
"""Accepted names (case-insensitive) of the output-length column / JSONL key."""

PRESETS_FILE = Path(__file__).parent / "data" / "workloads" / "presets.toml"


# --------------------------------------------------------------------------------------------
# The container


@dataclass(frozen=True, eq=False)
class Workload:
    """A request-length distribution as a piecewise-linear CDF.

    Attributes:
        name: short label (a preset name, a file stem, or given).
        tokens: breakpoints, tokens, float64, strictly increasing, all > 0 (read-only array).
        cdf: P(L <= tokens[i]), float64, non-decreasing, 0 at the first breakpoint and 1 at the
            last (read-only array). Linear between breakpoints, 0 below, 1 above.
        output_share: output tokens / all tokens, in (0, 1).
        description: one line of prose: where it came from.
        synthetic: True when made up (presets, parametric laws), False when read from data.
        params: how it was built (the law's parameters, or the source file and counts).
    """

    name: str
    tokens: np.ndarray
    cdf: np.ndarray
    output_share: float = DEFAULT_OUTPUT_SHARE
    description: str = ""
    synthetic: bool = False
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        label = f"workload {self.name!r}"
        tokens = np.array(self.tokens, dtype=np.float64)
        cdf = np.array(self.cdf, dtype=np.float64)
        if tokens.ndim != 1 or tokens.size < 2:
            raise SpecError("workload.tokens", f"{label}: need a 1-D array of >= 2 breakpoints")
        if cdf.shape != tokens.shape:
            raise SpecError(
                "workload.cdf", f"{label}: {cdf.shape} values for {tokens.shape} breakpoints"
            )
        if not np.all(np.isfinite(tokens)) or tokens[0] <= 0:
            raise SpecError("workload.tokens", f"{label}: breakpoints must be finite and > 0")
        steps = np.diff(tokens)
        if np.any(steps <= 0):
            i = int(np.argmax(steps <= 0)) + 1
            raise SpecError(
                "workload.tokens",
                f"{label}: breakpoints must strictly increase; tokens[{i}] = {tokens[i]:g} "
                f"after {tokens[i - 1]:g}",
            )
        if not np.all(np.isfinite(cdf)) or np.any(cdf < 0) or np.any(cdf > 1):
            raise SpecError("workload.cdf", f"{label}: values must lie in [0, 1]")
        if np.any(np.diff(cdf) < 0):
            i = int(np.argmax(np.diff(cdf) < 0)) + 1
            raise SpecError(
                "workload.cdf",
                f"{label}: must be non-decreasing; cdf[{i}] = {cdf[i]:g} after {cdf[i - 1]:g}",
            )
        if cdf[0] != 0.0 or cdf[-1] != 1.0:
            raise SpecError(
                "workload.cdf",
                f"{label}: must start at 0 and end at 1 (got {cdf[0]:g} and {cdf[-1]:g})",
            )
        share = self.output_share
        if isinstance(share, bool) or not isinstance(share, numbers.Real):
            raise SpecError("workload.output_share", f"{label}: must be a number in (0, 1)")
        if not 0.0 < float(share) < 1.0:
            raise SpecError("workload.output_share", f"{label}: must lie in (0, 1), got {share}")
        tokens.flags.writeable = False
        cdf.flags.writeable = False
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "cdf", cdf)
        object.__setattr__(self, "output_share", float(share))
        object.__setattr__(self, "synthetic", bool(self.synthetic))
        object.__setattr__(self, "params", dict(self.params))

    # Convenience wrappers over the array helpers (float arithmetic in JAX's default dtype).

    @property
    def max_tokens(self) -> float:
        """Longest request length the workload can produce (its last breakpoint)."""
        return float(self.tokens[-1])

    def cdf_at(self, x):
        """P(L <= x); see :func:`cdf_at`."""
        return cdf_at(self.tokens, self.cdf, x)

    def partial_moments(self, lo, hi):
        """(mass, int L dF, int L^2 dF) over (lo, hi]; see :func:`partial_moments`."""
        return partial_moments(self.tokens, self.cdf, lo, hi)

    def pool(self, lo, hi) -> PoolStats:
        """Statistics of the requests with lengths in (lo, hi]; see :func:`pool_stats`."""
        return pool_stats(self.tokens, self.cdf, self.output_share, lo, hi)

    def mean(self) -> float:
        """E[L] over the whole workload, tokens (float64, numpy)."""
        t0, t1 = self.tokens[:-1], self.tokens[1:]
        return float(np.sum(np.diff(self.cdf) * (t0 + t1) / 2))

    def padded(self, n: int) -> Workload:
        """The same distribution on exactly ``n`` breakpoints, for stacking workloads under vmap.

        Appends breakpoints 1, 2, ... tokens beyond the last one with cdf 1 (zero density), which
        changes no probability or moment. Refuses ``n`` below the current count.
        """
        k = self.tokens.size
        if n < k:
            raise SpecError("workload.tokens", f"cannot pad {k} breakpoints down to {n}")
        extra = self.tokens[-1] + np.arange(1, n - k + 1, dtype=np.float64)
        return Workload(
            self.name,
            np.concatenate([self.tokens, extra]),
            np.concatenate([self.cdf, np.ones(n - k)]),
            self.output_share,
            self.description,
            self.synthetic,
            self.params,
        )


# --------------------------------------------------------------------------------------------
# Errors


def _file_error(path, line: int | None, reason: str, field: str | None) -> SpecError:
    """A SpecError naming the file, the 1-based line (when there is one) and the reason."""
    where = f"line {line}: {reason}" if line is not None else reason
    if field:
        return SpecError(field, f"{path}, {where}")
    return SpecError(str(path), where)


def _read_text(path: Path, field: str | None) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise _file_error(path, None, f"cannot read file ({e.strerror or e})", field) from e
    except UnicodeDecodeError as e:
        raise _file_error(path, None, f"not UTF-8 text ({e.reason})", field) from e


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------
# CDF file


def _json_array_entries(text: str) -> list[tuple[int, Any]]:
    """(1-based line, value) for each element of a top-level JSON array (text already valid)."""
    decoder = json.JSONDecoder()
    ws = " \t\n\r"
    i = 0
    while text[i] in ws:
        i += 1
    i += 1  # the '['
    out = []
    while True:
        while text[i] in ws:
            i += 1
        if text[i] == "]":
            return out
        value, end = decoder.raw_decode(text, i)
        out.append((text.count("\n", 0, i) + 1, value))
        i = end
        while text[i] in ws:
            i += 1
        if text[i] == ",":
            i += 1


def from_cdf_json(
    path,
    *,
    output_share: float = DEFAULT_OUTPUT_SHARE,
    name: str | None = None,
    description: str | None = None,
    field: str | None = None,
) -> Workload:
    """A workload from a JSON list of ``[tokens, cumulative_fraction]`` breakpoints.

    ``tokens`` must be numbers > 0 and strictly increasing; fractions must lie in [0, 1], never
    decrease, and end at 1 (within 1e-9, then snapped to 1). A first fraction above 0 prepends a
    breakpoint ``(1 token, 0)`` so that mass is spread over ``(1, tokens[0]]`` (a first breakpoint
    at or below 1 token must then have fraction 0). Refusals name the file, the line and the entry
    (0-based index in the list). ``field`` prefixes errors with a spec path (``from_spec`` sets
    it); ``synthetic`` is False (the file is taken to describe data).
    """
    path = Path(path)
    text = _read_text(path, field)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _file_error(path, e.lineno, f"not valid JSON: {e.msg}", field) from e
    if not isinstance(doc, list):
        raise _file_error(
            path, 1, "expected a JSON list of [tokens, cumulative_fraction] pairs", field
        )
    entries = _json_array_entries(text)
    if not entries:
        raise _file_error(path, 1, "the list of breakpoints is empty", field)
    tokens: list[float] = []
    fracs: list[float] = []
    for k, (line, entry) in enumerate(entries):

        def bad(reason, line=line, k=k):
            return _file_error(path, line, f"entry {k}: {reason}", field)

        if not (isinstance(entry, list) and len(entry) == 2 and all(map(_is_number, entry))):
            raise bad(f"expected [tokens, cumulative_fraction] (two numbers), got {entry!r}")
        t, c = float(entry[0]), float(entry[1])
        if not math.isfinite(t) or t <= 0:
            raise bad(f"tokens must be a finite number > 0, got {entry[0]!r}")
        if not math.isfinite(c) or not 0.0 <= c <= 1.0:
            raise bad(f"cumulative fraction {entry[1]!r} is outside [0, 1]")
        if tokens and t <= tokens[-1]:
            raise bad(f"tokens must strictly increase: {entry[0]!r} after {tokens[-1]:g}")
        if fracs and c < fracs[-1]:
            raise bad(f"the CDF decreases: cumulative fraction {entry[1]!r} after {fracs[-1]:g}")
        tokens.append(t)
        fracs.append(c)
    last_line = entries[-1][0]
    if abs(fracs[-1] - 1.0) > _LAST_TOL:
        raise _file_error(
            path,
            last_line,
            f"entry {len(entries) - 1}: the last cumulative fraction must be 1, got {fracs[-1]:g}",
            field,
        )
    fracs[-1] = 1.0
    if fracs[0] > 0:
        if tokens[0] <= MIN_TOKENS:
            raise _file_error(
                path,
                entries[0][0],
                f"entry 0: a first breakpoint at or below {MIN_TOKENS:g} token must have "
                f"cumulative fraction 0 (requests are at least {MIN_TOKENS:g} token long)",
                field,
            )
        tokens.insert(0, MIN_TOKENS)
        fracs.insert(0, 0.0)
    return _build(
        name or path.stem,
        tokens,
        fracs,
        output_share,
        description or f"piecewise-linear CDF from {path.name}",
        False,
        {"cdf_file": str(path), "breakpoints": len(entries)},
        field or str(path),
    )


def _build(name, tokens, cdf, output_share, description, synthetic, params, field) -> Workload:
    """Workload(...) with its validation errors re-labelled under ``field``."""
    try:
        return Workload(name, tokens, cdf, output_share, description, synthetic, params)
    except SpecError as e:
        sub = e.field.removeprefix("workload")
        raise SpecError(f"{field}{sub}", str(e).split(": ", 1)[1]) from None


# --------------------------------------------------------------------------------------------
# Requests file


def _pick_alias(keys, aliases, what, where) -> str:
    """The one key among ``keys`` (already lower-cased) that is an alias; ``where`` raises."""
    found = [a for a in aliases if a in keys]
    if not found:
        raise where(f"no {what} column; expected one of {', '.join(aliases)}")
    if len(found) > 1:
        raise where(f"ambiguous {what} columns {', '.join(found)}; keep one")
    return found[0]


def _count(value, what: str, bad) -> int:
    """A non-negative integer token count from a CSV string or a JSON number."""
    if isinstance(value, str):
        s = value.strip()
        try:
            n = int(s)
        except ValueError:
            try:
                x = float(s)
            except ValueError:
                raise bad(f"{what} {value!r} is not an integer") from None
            if not (math.isfinite(x) and x.is_integer()):
                raise bad(f"{what} {value!r} is not an integer") from None
            n = int(x)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"{what} {value!r} is not an integer")
    elif isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise bad(f"{what} {value!r} is not an integer")
        n = int(value)
    else:
        n = value
    if n < 0:
        raise bad(f"{what} {n} is negative")
    return n


def _read_requests_csv(path: Path, text: str, field) -> tuple[list[int], list[int]]:
    rows = csv.reader(text.splitlines(keepends=True))
    prompts: list[int] = []
    outputs: list[int] = []
    header = None
    for row in rows:
        line = rows.line_num
        if not row or all(not c.strip() for c in row):
            continue

        def bad(reason, line=line):
            return _file_error(path, line, reason, field)

        if header is None:
            header = [c.strip().lower() for c in row]
            ip = header.index(_pick_alias(header, PROMPT_ALIASES, "prompt-length", bad))
            io = header.index(_pick_alias(header, OUTPUT_ALIASES, "output-length", bad))
            continue
        if len(row) <= max(ip, io):
            raise bad(f"expected {len(header)} columns, got {len(row)}")
        p = _count(row[ip], header[ip], bad)
        o = _count(row[io], header[io], bad)
        if p + o == 0:
            raise bad("prompt + output tokens is 0")
        prompts.append(p)
        outputs.append(o)
    if header is None:
        raise _file_error(path, 1, "empty file: expected a header row", field)
    return prompts, outputs


def _read_requests_jsonl(path: Path, text: str, field) -> tuple[list[int], list[int]]:
    prompts: list[int] = []
    outputs: list[int] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue

        def bad(reason, line=line):
            return _file_error(path, line, reason, field)

        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise bad(f"not valid JSON: {e.msg}") from e
        if not isinstance(obj, dict):
            raise bad("expected a JSON object per line")
        keys = {str(k).strip().lower(): v for k, v in obj.items()}
        kp = _pick_alias(keys, PROMPT_ALIASES, "prompt-length", bad)
        ko = _pick_alias(keys, OUTPUT_ALIASES, "output-length", bad)
        p = _count(keys[kp], kp, bad)
        o = _count(keys[ko], ko, bad)
        if p + o == 0:
            raise bad("prompt + output tokens is 0")
        prompts.append(p)
        outputs.append(o)
    return prompts, outputs


def _empirical_breakpoints(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Piecewise-linear CDF of integer lengths; the mean is exact (see the module docstring)."""
    values, counts = np.unique(lengths, return_counts=True)
    n = counts.sum()
    if values.size <= _EXACT_LENGTHS:
        group = np.arange(values.size)
        mode = "exact"
    else:
        before = np.cumsum(counts) - counts
        mass_idx = ((before + counts / 2) / n * _MASS_GROUPS).astype(int)
        mass_idx = np.minimum(mass_idx, _MASS_GROUPS - 1)
        logv = np.log(values.astype(np.float64))
        span = logv[-1] - logv[0]
        log_idx = np.minimum(((logv - logv[0]) / span * _LOG_GROUPS).astype(int), _LOG_GROUPS - 1)
        group = mass_idx + log_idx  # non-decreasing, changes when either index does
        mode = "grouped"
    starts = np.flatnonzero(np.r_[True, np.diff(group) != 0])
    ends = np.r_[starts[1:], values.size]
    tokens: list[float] = []
    cdf: list[float] = []
    cum = 0
    for s, e in zip(starts, ends, strict=True):
        v, c = values[s:e], counts[s:e]
        q = int(c.sum())
        lo, hi = float(v[0]) - 0.5, float(v[-1]) + 0.5
        if not tokens or tokens[-1] < lo:
            tokens.append(lo)
            cdf.append(cum / n)
        if e - s > 1:  # two uniform pieces split at the group mean m, masses keep m exact
            m = float(np.dot(v, c)) / q
            tokens.append(m)
            cdf.append((cum + q * (hi - m) / (hi - lo)) / n)
        cum += q
        tokens.append(hi)
        cdf.append(cum / n)
    cdf[-1] = 1.0
    return np.asarray(tokens), np.asarray(cdf), mode


def from_requests(
    path, *, name: str | None = None, description: str | None = None, field: str | None = None
) -> Workload:
    """The empirical workload of a file of requests (``.csv``, or ``.jsonl`` / ``.ndjson``).

    CSV: a header row, then one request per row; JSONL: one JSON object per line. The prompt
    length is read from the first of :data:`PROMPT_ALIASES` present (``prompt_tokens``,
    ``input_tokens``, ``prompt_len``, ``input_len``), the output length from
    :data:`OUTPUT_ALIASES` (``output_tokens``, ``output_len``, ``completion_tokens``); names are
    case-insensitive, other columns are ignored, two aliases of one quantity are refused. Values
    must be non-negative integers (``12`` or ``12.0``) and each request must have prompt + output
    > 0. Blank lines are skipped. ``output_share = sum(output) / sum(prompt + output)``. The
    breakpoints are described in the module docstring (at most 512; mean exact).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise _file_error(
            path, None, f"unknown requests format {suffix!r}; use .csv, .jsonl or .ndjson", field
        )
    text = _read_text(path, field)
    if suffix == ".csv":
        prompts, outputs = _read_requests_csv(path, text, field)
    else:
        prompts, outputs = _read_requests_jsonl(path, text, field)
    if not prompts:
        raise _file_error(path, None, "no requests in the file", field)
    p = np.asarray(prompts, dtype=np.int64)
    o = np.asarray(outputs, dtype=np.int64)
    total = p + o
    if o.sum() == 0 or p.sum() == 0:
        which = "output" if o.sum() == 0 else "prompt"
        raise _file_error(
            path, None, f"{which} tokens sum to 0: the output share must lie in (0, 1)", field
        )
    share = float(o.sum()) / float(total.sum())
    tokens, cdf, mode = _empirical_breakpoints(total)
    params = {
        "requests_file": str(path),
        "requests": int(total.size),
        "distinct_lengths": int(np.unique(total).size),
        "breakpoints_mode": mode,
        "mean_tokens": float(total.mean()),
    }
    return _build(
        name or path.stem,
        tokens,
        cdf,
        share,
        description or f"empirical: {total.size} requests from {path.name}",
        False,
        params,
        field or str(path),
    )


# --------------------------------------------------------------------------------------------
# Parametric laws


def _phi(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF, accurate in the lower tail (erfc)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.array([math.erfc(-v / math.sqrt(2.0)) / 2 for v in z.ravel()], dtype=np.float64)
    return out.reshape(z.shape)


def _positive(params: Mapping, key: str, field: str, *, required: bool = True) -> float | None:
    if key not in params:
        if required:
            raise SpecError(f"{field}.{key}", "required (a number > 0)")
        return None
    v = params[key]
    if not _is_number(v) or not math.isfinite(v) or v <= 0:
        raise SpecError(f"{field}.{key}", f"must be a number > 0, got {v!r}")
    return float(v)


_LOGNORMAL_KEYS = ("median", "sigma", "max")
_MIXTURE_KEYS = ("components", "max")
_COMPONENT_KEYS = ("weight", "median", "sigma")
_KINDS = ("lognormal", "mixture")


def _check_keys(params: Mapping, allowed, field: str) -> None:
    for key in params:
        if key not in allowed:
            raise SpecError(f"{field}.{key}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def parametric(
    kind: str,
    *,
    output_share: float = DEFAULT_OUTPUT_SHARE,
    name: str | None = None,
    description: str | None = None,
    points: int = GRID_POINTS,
    field: str = "workload",
    **params,
) -> Workload:
    """A parametric law discretised onto a log-spaced grid.

    ``kind="lognormal"``: ``median`` (tokens, > 0), ``sigma`` (of ln L, > 0), optional ``max``
    (tokens, > 1). ``kind="mixture"``: ``components``, a list of ``{weight, median, sigma}``
    (weights > 0 summing to 1 within 1e-6), optional ``max`` shared by all.

    The law is truncated to ``[1, max]`` tokens and renormalised: ``F_T(x) = (F(x) - F(1)) /
    (F(max) - F(1))`` with ``F(x) = sum_k w_k Phi((ln x - ln median_k) / sigma_k)``, evaluated
    exactly at ``points`` log-spaced breakpoints from 1 to ``max`` and linear in between. Without
    ``max`` the grid ends at ``median * exp(6 sigma)`` (the largest over components), where the
    law's upper tail is below 1e-9. ``synthetic`` is True.
    """
    if kind not in _KINDS:
        raise SpecError(f"{field}.kind", f"unknown kind {kind!r}; allowed: {', '.join(_KINDS)}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise SpecError(f"{field}.points", f"must be an integer >= 2, got {points!r}")
    if kind == "lognormal":
        _check_keys(params, _LOGNORMAL_KEYS, field)
        comps = [(1.0, _positive(params, "median", field), _positive(params, "sigma", field))]
        clean: dict[str, Any] = {"median": comps[0][1], "sigma": comps[0][2]}
    else:
        _check_keys(params, _MIXTURE_KEYS, field)
        raw = params.get("components")
        if not isinstance(raw, list | tuple) or not raw:
            raise SpecError(f"{field}.components", "required: a non-empty list of components")
        comps = []
        for i, c in enumerate(raw):
            f = f"{field}.components[{i}]"
            if not isinstance(c, Mapping):
                raise SpecError(f, "must be a table {weight, median, sigma}")
            _check_keys(c, _COMPONENT_KEYS, f)
            comps.append(
                (_positive(c, "weight", f), _positive(c, "median", f), _positive(c, "sigma", f))
            )
        wsum = sum(w for w, _, _ in comps)
        if abs(wsum - 1.0) > 1e-6:
            raise SpecError(f"{field}.components", f"weights must sum to 1, got {wsum:g}")
        clean = {"components": [{"weight": w, "median": m, "sigma": s} for w, m, s in comps]}
    top = _positive(params, "max", field, required=False)
    if top is None:
        top = max(m * math.exp(_TAIL_Z * s) for _, m, s in comps)
    elif top <= MIN_TOKENS:
        raise SpecError(f"{field}.max", f"must exceed {MIN_TOKENS:g} token, got {top:g}")
    clean["max"] = top

    def law_cdf(x):
        z = np.log(np.asarray(x, dtype=np.float64))
        return sum(w * _phi((z - math.log(m)) / s) for w, m, s in comps)

    grid = np.geomspace(MIN_TOKENS, top, points)
    f = law_cdf(grid)
    f_lo, f_hi = float(law_cdf(MIN_TOKENS)), float(law_cdf(top))
    inside = f_hi - f_lo
    if not inside > 1e-9:
        raise SpecError(
            f"{field}.max", f"less than 1e-9 of the law lies in [{MIN_TOKENS:g}, {top:g}] tokens"
        )
    cdf = np.clip((f - f_lo) / inside, 0.0, 1.0)
    cdf = np.maximum.accumulate(cdf)
    cdf[0], cdf[-1] = 0.0, 1.0
    if description is None:
        if kind == "lognormal":
            description = (
                f"lognormal, median {comps[0][1]:g} tokens, sigma {comps[0][2]:g}, "
                f"truncated to [1, {top:g}]"
            )
        else:
            description = f"mixture of {len(comps)} lognormals, truncated to [1, {top:g}]"
    return _build(
        name or kind,
        grid,
        cdf,
        output_share,
        description,
        True,
        {"kind": kind, **clean, "points": points, "mass_in_range": inside},
        field,
    )


# --------------------------------------------------------------------------------------------
# Presets


_PRESET_META = ("description", "synthetic", "source", "output_share", "mean_tokens")


def _presets_doc() -> dict:
    try:
        with PRESETS_FILE.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as e:  # a packaging bug, not user input
        raise SpecError(str(PRESETS_FILE), f"cannot read the presets ({e})") from e


def list_presets() -> list[str]:
    """Names of the shipped workload presets, in file order."""
    return list(_presets_doc())


def load_preset(
    name: str, *, output_share: float | None = None, field: str = "workload"
) -> Workload:
    """A shipped preset (``chat``, ``rag``, ``agent``); an unknown name lists the allowed ones.

    ``output_share`` overrides the preset's own.
    """
    doc = _presets_doc()
    if name not in doc:
        raise SpecError(f"{field}.preset", f"unknown preset {name!r}; allowed: {', '.join(doc)}")
    table = dict(doc[name])
    meta = {k: table.pop(k) for k in _PRESET_META if k in table}
    kind = table.pop("kind", None)
    share = meta.get("output_share", DEFAULT_OUTPUT_SHARE) if output_share is None else output_share
    w = parametric(
        kind,
        output_share=share,
        name=name,
        description=meta.get("description"),
        field=f"{field}.preset.{name}",
        **table,
    )
    if meta.get("synthetic", True) is not True:  # every shipped preset is made up
        raise SpecError(str(PRESETS_FILE), f"[{name}] must say synthetic = true")
    w.params["source"] = meta.get("source", "")
    return w


# --------------------------------------------------------------------------------------------
# Spec tables


_COMMON_KEYS = ("name", "description")


def _opt_str(table, key, field):
    v = table.get(key)
    if v is not None and not isinstance(v, str):
        raise SpecError(f"{field}.{key}", f"must be a string, got {v!r}")
    return v


def _share(table, field) -> float:
    if "output_share" not in table:
        return DEFAULT_OUTPUT_SHARE
    v = table["output_share"]
    if not _is_number(v) or not 0.0 < v < 1.0:
        raise SpecError(f"{field}.output_share", f"must be a number in (0, 1), got {v!r}")
    return float(v)


def from_spec(table: Mapping, base_dir=".", *, field: str = "workload") -> Workload:
    """A workload from a spec table; exactly one source key.

    - ``{preset = "chat"}`` (optional ``output_share``)
    - ``{cdf = "file.json"}`` (optional ``output_share``; see :func:`from_cdf_json`)
    - ``{requests = "file.csv"}`` (output share measured from the file; see :func:`from_requests`)
    - ``{kind = "lognormal", median = 1500, sigma = 1.0, max = 131072, output_share = 0.2}``
    - ``{kind = "mixture", components = [{weight = 0.7, median = 1000, sigma = 0.8}, ...],
      max = 131072}``

    Every form also takes ``name`` and ``description``. Relative file paths are resolved against
    ``base_dir`` (the spec file's folder). Unknown keys are refused naming the key and the allowed
    ones; ``field`` is the spec path of the table, used in every error.
    """
    if not isinstance(table, Mapping):
        raise SpecError(field, f"must be a table, got {table!r}")
    sources = [k for k in ("preset", "cdf", "requests", "kind") if k in table]
    if len(sources) != 1:
        what = "no source key" if not sources else f"several source keys ({', '.join(sources)})"
        raise SpecError(field, f"{what}; give exactly one of preset, cdf, requests, kind")
    source = sources[0]
    name = _opt_str(table, "name", field)
    description = _opt_str(table, "description", field)
    if source == "kind":
        kind = table["kind"]
        if kind not in _KINDS:
            raise SpecError(f"{field}.kind", f"unknown kind {kind!r}; allowed: {', '.join(_KINDS)}")
        law = _LOGNORMAL_KEYS if kind == "lognormal" else _MIXTURE_KEYS
        _check_keys(table, ("kind", "output_share", *_COMMON_KEYS, *law), field)
        params = {k: table[k] for k in law if k in table}
        return parametric(
            kind,
            output_share=_share(table, field),
            name=name,
            description=description,
            field=field,
            **params,
        )
    allowed = (source, *_COMMON_KEYS) + (() if source == "requests" else ("output_share",))
    _check_keys(table, allowed, field)
    value = table[source]
    if not isinstance(value, str) or not value:
        raise SpecError(f"{field}.{source}", f"must be a non-empty string, got {value!r}")
    if source == "preset":
        share = _share(table, field) if "output_share" in table else None
        w = load_preset(value, output_share=share, field=field)
        if name is None and description is None:
            return w
        return Workload(
            name or w.name,
            w.tokens,
            w.cdf,
            w.output_share,
            description or w.description,
            w.synthetic,
            w.params,
        )
    path = Path(value)
    if not path.is_absolute():
        path = Path(base_dir) / path
    sub = f"{field}.{source}"
    if source == "cdf":
        return from_cdf_json(
            path,
            output_share=_share(table, field),
            name=name,
            description=description,
            field=sub,
        )
    return from_requests(path, name=name, description=description, field=sub)
