"""summary.csv: the per-cell medians computed from a samples frame (`summarise`)."""

from __future__ import annotations

import pandas as pd

from lab.results.schema import axis_columns, samples_frame


def summarise(samples: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per cell × protocol × workload × implementation.

    Columns: cell, protocol, workload, implementation, the axis columns, `n_repetitions`, then
    per metric the median over repetitions of (aggregates) the value or (per-sample metrics)
    the repetition's median. Per-sample metrics that carry a handshake `mode` become one
    column per mode, `<metric>_<mode>` (e.g. `ttfb_rtt_zero_rtt`), since mixing modes in one
    median means nothing; `early_data_fraction_<mode>` is the median over repetitions of the
    fraction of that mode's samples the server saw as early data. `cpu_bound` is True when
    any repetition was CPU-bound.
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
    if "cpu_bound" in table.columns:
        any_bound = (
            df[df["metric"] == "cpu_bound"].groupby(group)["value"].max().reindex(table.index)
        )
        table["cpu_bound"] = (any_bound > 0.5).astype("boolean")
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
