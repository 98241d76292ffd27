"""summary.csv: the per-cell medians computed from a samples frame (`summarise`)."""

from __future__ import annotations

import pandas as pd

from lab.results.schema import axis_columns, samples_frame

# Flag metrics (1.0 / 0.0 per repetition): True in summary.csv when any repetition set them.
FLAG_METRICS: tuple[str, ...] = ("cpu_bound", "congestion_limited", "host_busy")
# The loss-anchored HOL aggregates (hol_spread, ...) exist only in repetitions with a counted
# loss, so their medians are over those: summary.csv counts them in this column.
HOL_SPREAD_REPS = "hol_spread_reps"


def summarise(samples: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per cell × protocol × workload × implementation.

    Columns: cell, protocol, workload, implementation, the axis columns, `n_repetitions`, then
    per metric the median over repetitions of (aggregates) the value or (per-sample metrics)
    the repetition's median. Per-sample metrics that carry a handshake `mode` become one
    column per mode, `<metric>_<mode>` (e.g. `ttfb_rtt_zero_rtt`), since mixing modes in one
    median means nothing; `early_data_fraction_<mode>` is the median over repetitions of the
    fraction of that mode's samples the server saw as early data. A flag (FLAG_METRICS:
    `cpu_bound`, `congestion_limited`, `host_busy`) is True when any repetition set it.
    `hol_spread_reps` (where `hol_losses` exists) = the repetitions with a counted loss:
    `hol_spread` and the other per-loss aggregates are medians over those, `hol_losses` over
    all repetitions.
    """
    df = samples_frame(samples) if len(samples) else samples
    group = ["cell", "protocol", "workload", "implementation"]
    if df.empty:
        return pd.DataFrame(columns=[*group, "n_repetitions"])
    axes = axis_columns(df)
    col = df["metric"].astype(object).copy()
    has_mode = df["mode"].notna().to_numpy()
    col[has_mode] = col[has_mode] + "_" + df.loc[has_mode, "mode"].astype(object)
    df = df.assign(_col=col.to_numpy())

    per_rep = df.groupby([*group, "repetition", "_col"], sort=True)["value"].median()
    table = per_rep.groupby(level=[*group, "_col"]).median().unstack("_col")
    for flag in FLAG_METRICS:
        if flag in table.columns:
            any_set = df[df["metric"] == flag].groupby(group)["value"].max().reindex(table.index)
            table[flag] = (any_set > 0.5).astype("boolean")
    if "hol_losses" in table.columns:
        reps = _defined_reps(df, group, "hol_spread").reindex(table.index, fill_value=0)
        table[HOL_SPREAD_REPS] = reps.astype("Int64").where(table["hol_losses"].notna())
    if has_mode.any():
        hs = df[has_mode & df["early_data"].notna().to_numpy()]
        if not hs.empty:
            frac = (
                hs.assign(_ed=hs["early_data"].astype(float), _m=hs["mode"].astype(object))
                .groupby([*group, "_m", "repetition"])["_ed"]
                .mean()
                .groupby(level=[*group, "_m"])
                .median()
                .unstack("_m")
            )
            frac.columns = [f"early_data_fraction_{m}" for m in frac.columns]
            table = table.join(frac)
    n_rep = df.groupby(group)["repetition"].nunique().rename("n_repetitions")
    first_axes = df.groupby(group)[axes].first() if axes else None
    out = n_rep.to_frame()
    if first_axes is not None:
        out = first_axes.join(out)
    out = out.join(table).reset_index()
    out.columns.name = None
    metric_cols = sorted(c for c in out.columns if c not in {*group, *axes, "n_repetitions"})
    return out[[*group, *axes, "n_repetitions", *metric_cols]]


def _defined_reps(df: pd.DataFrame, group: list[str], metric: str) -> pd.Series:
    """Per group that has `metric`, the number of repetitions with a value of it."""
    has = df[(df["metric"] == metric) & df["value"].notna()]
    return has.groupby(group)["repetition"].nunique()
