"""Turning a study's runs into DIR/report.csv, DIR/report.md and DIR/*.png."""
import csv
import datetime
import os
import platform
import statistics
import subprocess

from runner import GROUPS, summarise

COLUMNS = [
    "nodes", "ranks", "ranks_per_node", "strategy", "partition_size", "hierarchical", "link",
    "compute", "repeats", "runs_ok", "step_ms_median", "step_ms_min", "step_ms_max",
    "tokens_per_s", "tokens_per_s_per_rank", "tflops_per_rank", "mfu",
    "weak_scaling_efficiency", "speedup_vs_zero3", "exposed_comm_ms",
] + [f"engine_{g}_bytes_step" for g in GROUPS] + [
    "wire_tx_bytes_per_node_step", "wire_rx_bytes_busiest_node_step",
    "predicted_wire_bytes_per_node_step", "wire_vs_predicted", "final_loss",
    "predicted_step_ms", "cpu_per_wall", "status", "last_error",
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ring_wire_prediction(row, engine_bytes):
    """Bytes one node's link carries each way per step if every collective the engine
    issued ran as a ring over its group with the ranks of a node adjacent: a ring over a
    group spanning several nodes crosses each of its nodes' links once, carrying what one
    rank sends (the engine's ring-model counter). Per node that is the counter times the
    number of such rings through the node (see the README's "Scaling studies")."""
    w, g, p = row["ranks"], row["ranks_per_node"], row["partition_size"]
    nodes = row["nodes"]
    if nodes <= 1:
        return 0.0
    rings = {"world": 1, "intra": 0,
             "partition": 1 if p > g else 0,
             "inter": g if p > g else 0,
             "replication": (min(g, p) if w // p > 1 else 0)}
    total, known = 0.0, False
    for group, count in rings.items():
        b = engine_bytes.get(group)
        if b is not None:
            total += count * b
            known = True
    return total if known else None


def wire_per_step(run_summary, baseline, steps):
    """(mean tx per node, busiest node's rx) per step, start-up traffic removed."""
    now, base = run_summary["counters"], baseline["counters"] if baseline else {}
    if not now or not base or set(now) != set(base):
        return None, None
    tx = [(now[n][0] - base[n][0]) / steps for n in now]
    rx = [(now[n][1] - base[n][1]) / steps for n in now]
    return sum(tx) / len(tx), max(rx)


PLAN_MODEL_OPTIONS = ("--seq", "--layers", "--hidden", "--heads", "--vocab", "--variant")
# mics-train options mics-plan takes too, with mics-train's defaults for the backends a
# study runs (cpu or emulated: both compute in f32 unless told otherwise). mics-plan's own
# defaults differ (the cluster's compute type, recomputation chosen), so they are always
# passed.
PLAN_TRAIN_OPTIONS = {"--compute-dtype": "f32", "--grad-reduce-dtype": "f32", "--grad-sync": "two-hop",
                      "--overlap-grad-sync": "true", "--prefetch": "true", "--recompute": "false",
                      "--hierarchical-all-reduce": "true"}
IMPLICIT_TRUE = ("--recompute",)  # mics-train flags that mean true when given alone


def train_option(args, name):
    """The value train-args give option `name` (the last one wins), or None."""
    value = None
    for i, a in enumerate(args):
        key, eq, v = a.partition("=")
        if key != name:
            continue
        if eq:
            value = v
        elif name in IMPLICIT_TRUE:
            value = "true"
        elif i + 1 < len(args):
            value = args[i + 1]
    if name in IMPLICIT_TRUE and value is not None:  # mics-plan takes true, false or auto
        value = "true" if value.lower() in ("1", "true", "yes", "on") else "false"
    return value


def plan_args(study, n):
    """mics-plan's options for the study's runs at n nodes: the model, its overrides from
    train-args, the batch (weak or strong scaling) and micro-batch, the ranks per node, and
    the types and schedule options the runs used (train-args, else mics-train's defaults)."""
    args = ["--model", study.model, "--cluster", study.cluster, "--nodes", str(n),
            "--ranks-per-node", str(study.ranks_per_node), "--micro-batch", str(study.micro_batch)]
    args += (["--global-batch", str(study.global_batch)] if study.global_batch
             else ["--batch-per-gpu", str(study.batch_per_rank)])
    t = study.train_args
    for name in PLAN_MODEL_OPTIONS:
        v = train_option(t, name)
        if v is not None:
            args += [name, v]
    for name, default in PLAN_TRAIN_OPTIONS.items():
        v = train_option(t, name)
        args += [name, default if v is None else v]
    return args


def plan_predictions(study, bin_dir, out_dir):
    """{(strategy, p, hierarchical, nodes): step_ms} from mics-plan, when the study names a
    cluster file and mics-plan can predict; (predictions, note). Rows for another rank
    count (the cluster file's ranks per node differ from the study's) do not match."""
    if not study.cluster:
        return {}, "no cluster file in the study: predicted_step_ms left empty"
    plan = os.environ.get("MICS_PLAN", os.path.join(bin_dir, "mics-plan"))
    preds, notes = {}, []
    for n in study.nodes:
        path = os.path.join(out_dir, f"plan-n{n}.csv")
        r = subprocess.run([plan] + plan_args(study, n) + ["--csv", path],
                           capture_output=True, text=True)
        if r.returncode != 0 or not os.path.isfile(path):
            lines = (r.stdout + r.stderr).strip().splitlines()
            notes.append(f"mics-plan could not predict at {n} nodes: {lines[-1] if lines else r.returncode}")
            continue
        with open(path) as f:
            for row in csv.DictReader(f):
                try:
                    if "gpus" in row and int(row["gpus"]) != study.world(n):
                        continue
                    key = (row["strategy"], int(row["partition_size"]),
                           row["hierarchical"].strip().lower() in ("1", "true", "yes", "on"),
                           int(row["nodes"]))
                    preds[key] = float(row["step_ms"])
                except (KeyError, ValueError):
                    continue
    note = "; ".join(notes) if notes else f"predicted_step_ms from mics-plan --cluster {study.cluster} (a model's estimate)"
    return preds, note


def aggregate(study, runs, bin_dir, out_dir):
    """One row per configuration (see COLUMNS), plus the notes for report.md."""
    by_config = {}
    for r in runs:
        by_config.setdefault((r.nodes, r.link, r.strategy), []).append(r)
    preds, plan_note = plan_predictions(study, bin_dir, out_dir)
    rows = []
    for (n, link, st), group in by_config.items():
        rows.append(config_row(study, n, link, st, group, preds))
    add_relative_columns(rows)
    return rows, plan_note


def config_row(study, n, link, st, group, preds):
    w = study.world(n)
    p = st.partition_size(w)
    row = {"nodes": n, "ranks": w, "ranks_per_node": study.ranks_per_node, "strategy": st.name,
           "partition_size": p, "hierarchical": str(st.hierarchical).lower(), "link": link,
           "compute": study.compute if study.compute == "real" else f"model {study.emulated_tflops:g} TFLOPS",
           "repeats": study.repeats, "_label": st.label()}
    baseline = next((r for r in group if r.repeat == "baseline"), None)
    base_sum = summarise(baseline) if baseline and (baseline.status() or {}).get("state") == "ok" else None
    reps = [r for r in group if r.repeat != "baseline"]
    statuses = [(r, r.status() or {"state": "not run", "last_line": ""}) for r in reps]
    ok = [r for r, s in statuses if s["state"] == "ok"]
    bad = [(r, s) for r, s in statuses if s["state"] != "ok"]
    row["runs_ok"] = len(ok)
    row["status"] = "ok" if not bad else ("failed" if not ok else "partial")
    row["last_error"] = "; ".join(f"{r.describe()}: {s['state']}: {s.get('last_line', '')}" for r, s in bad)
    sums = [summarise(r) for r in ok]
    per_run = [s["step_ms"] for s in sums if s["step_ms"] is not None]
    if per_run:
        row["step_ms_median"] = statistics.median(per_run)
        row["step_ms_min"], row["step_ms_max"] = min(per_run), max(per_run)
        tokens = study.batch(n) * model_seq(study)
        row["tokens_per_s"] = tokens / (row["step_ms_median"] / 1e3)
        row["tokens_per_s_per_rank"] = row["tokens_per_s"] / w
    row["tflops_per_rank"] = median(s["tflops_per_rank"] for s in sums)
    row["mfu"] = median(s["mfu"] for s in sums)
    row["exposed_comm_ms"] = median(s["exposed_comm_ms"] for s in sums)
    engine = {}
    for g in GROUPS:
        engine[g] = median(s[f"{g}_bytes"] for s in sums)
        row[f"engine_{g}_bytes_step"] = engine[g]
    wires = [wire_per_step(s, base_sum, study.steps) for s in sums]
    row["wire_tx_bytes_per_node_step"] = median(t for t, _ in wires)
    row["wire_rx_bytes_busiest_node_step"] = median(x for _, x in wires)
    row["predicted_wire_bytes_per_node_step"] = ring_wire_prediction(row, engine)
    if row["wire_tx_bytes_per_node_step"] is not None and row["predicted_wire_bytes_per_node_step"]:
        row["wire_vs_predicted"] = row["wire_tx_bytes_per_node_step"] / row["predicted_wire_bytes_per_node_step"]
    losses = [s["final_loss"] for s in sums if s["final_loss"] not in (None, "")]
    row["final_loss"] = losses[-1] if losses else None
    row["predicted_step_ms"] = preds.get((st.name, p, st.hierarchical, n))
    if row["predicted_step_ms"] is None and st.name == "mics" and p == w:
        # mics with one group over the world is zero3 by another name (mics-plan's name).
        row["predicted_step_ms"] = preds.get(("zero3", p, st.hierarchical, n))
    cpu = [(r.status() or {}) for r in ok]
    walls = sum(s.get("wall_s", 0) for s in cpu)
    row["cpu_per_wall"] = sum(s.get("cpu_s", 0) for s in cpu) / walls if walls else None
    return row


def model_seq(study):
    """The sequence length the runs used: a --seq in train-args, else the preset's."""
    args = study.train_args
    for i, a in enumerate(args):
        if a == "--seq" and i + 1 < len(args):
            return int(args[i + 1])
        if a.startswith("--seq="):
            return int(a.split("=", 1)[1])
    with open(study.model) as f:
        for line in f:
            key, _, value = line.split("#", 1)[0].partition("=")
            if key.strip() == "seq":
                return int(value)
    raise ValueError(f"{study.model}: no seq")


def add_relative_columns(rows):
    """Weak-scaling efficiency against the smallest node count of the same strategy and
    link; speed-up against ZeRO-3 at the same node count and link."""
    def key(r):
        return (r["_label"], r["link"])
    smallest = {}
    for r in sorted(rows, key=lambda r: r["nodes"]):
        if r.get("tokens_per_s_per_rank") and key(r) not in smallest:
            smallest[key(r)] = r
    zero3 = {(r["nodes"], r["link"]): r for r in rows if r["strategy"] == "zero3"}
    for r in rows:
        base = smallest.get(key(r))
        if base and r.get("tokens_per_s_per_rank"):
            r["weak_scaling_efficiency"] = r["tokens_per_s_per_rank"] / base["tokens_per_s_per_rank"]
        z = zero3.get((r["nodes"], r["link"]))
        if z and z.get("step_ms_median") and r.get("step_ms_median"):
            r["speedup_vs_zero3"] = z["step_ms_median"] / r["step_ms_median"]


def cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([cell(r.get(c)) for c in COLUMNS])


def machine():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), Linux {platform.release()}"


MD_COLUMNS = [("nodes", "nodes"), ("ranks", "ranks"), ("_label", "strategy"), ("link", "link"),
              ("step_ms_median", "step ms (median)"), ("step_ms_min", "min"), ("step_ms_max", "max"),
              ("tokens_per_s_per_rank", "tok/s/rank"), ("weak_scaling_efficiency", "weak eff."),
              ("speedup_vs_zero3", "vs ZeRO-3"), ("exposed_comm_ms", "exposed comm ms"),
              ("wire_tx_bytes_per_node_step", "wire B/node/step"),
              ("predicted_wire_bytes_per_node_step", "ring model B/node/step"),
              ("wire_vs_predicted", "wire/model"), ("final_loss", "final loss"),
              ("predicted_step_ms", "mics-plan ms"), ("status", "status")]


def write_markdown(study, target, rows, runs, notes, path, load_start, started):
    loads = [s.get("load") for s in (r.status() or {} for r in runs) if s.get("load") is not None]
    out = [f"# Scaling study: {study.name}", "",
           f"- date: {started} to {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC",
           f"- machine: {machine()}",
           f"- load average (1 min): {load_start:.2f} at the start, "
           + (f"median {statistics.median(loads):.2f} (min {min(loads):.2f}, max {max(loads):.2f}) at the end of the runs"
              if loads else "no runs"),
           f"- target: {target.name}; compute: {rows[0]['compute'] if rows else study.compute}",
           f"- {study.steps} steps per run, the first {study.skip_steps} left out of the timing; "
           f"{study.repeats} repeat(s) per configuration, interleaved (strategy order rotated per repeat); "
           "step ms is the median of the runs' medians, min and max are over the runs",
           ""]
    if study.compute == "model":
        out += ["**Losses are not computed** under the compute model (`--backend emulated`): every "
                "kernel only waits its modelled time; the final-loss column says so on every row.", ""]
    out += ["| " + " | ".join(h for _, h in MD_COLUMNS) + " |",
            "|" + "---|" * len(MD_COLUMNS)]
    for r in rows:
        out.append("| " + " | ".join(md_cell(r.get(k)) for k, _ in MD_COLUMNS) + " |")
    out += ["", "Columns: weak eff. = tokens/s per rank over that of the smallest node count "
            "(same strategy and link); vs ZeRO-3 = ZeRO-3's step time over this one (same nodes "
            "and link); wire = bytes each node's eth0 sent per step, measured by the interface "
            "counters with the start-up traffic of a 0-step run of the same configuration taken "
            "off (emulated target only; includes TCP/IP/Ethernet headers); ring model = what the "
            "engine's collectives would put on each node's link as rings (an estimate, not a "
            "measurement: headers not included).", ""]
    out += [f"- {n}" for n in notes]
    failed = [r for r in rows if r.get("last_error")]
    if failed:
        out += ["", "## Failed runs", ""] + [f"- {r['last_error']}" for r in failed]
    out += ["", "## Commands", "", "```"]
    seen = set()
    for r in runs:
        s = r.status()
        if s and r.config_id not in seen and r.repeat != "baseline":
            seen.add(r.config_id)
            out.append(" ".join(s["command"]))
    out += ["```", "", "## Study file", "", "```", study.text.rstrip(), "```", ""]
    with open(path, "w") as f:
        f.write("\n".join(out))


def md_cell(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.4g}"
    return "" if v is None else str(v)


def plot(rows, out_dir):
    """efficiency.png, throughput.png and, with wire counters, wire_bytes.png; returns the
    file names written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = sorted({r["link"] for r in rows})
    labels = list(dict.fromkeys(r["_label"] for r in rows))
    written = []
    for name, key, ylabel in (("efficiency.png", "weak_scaling_efficiency", "weak-scaling efficiency"),
                              ("throughput.png", "tokens_per_s_per_rank", "tokens/s per rank")):
        fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 3.8), squeeze=False)
        for ax, link in zip(axes[0], links):
            for label in labels:
                pts = sorted((r["nodes"], r[key]) for r in rows
                             if r["link"] == link and r["_label"] == label and r.get(key) is not None)
                if pts:
                    ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
            ax.set_title(f"link {link}")
            ax.set_xlabel("nodes")
            ax.set_ylabel(ylabel)
            ax.set_xticks(sorted({r["nodes"] for r in rows}))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name), dpi=90)
        plt.close(fig)
        written.append(name)
    wired = [r for r in rows if r.get("wire_tx_bytes_per_node_step") is not None]
    if wired:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(wired)), 4))
        xs = range(len(wired))
        ax.bar([x - 0.2 for x in xs], [r["wire_tx_bytes_per_node_step"] / 1e6 for r in wired],
               width=0.4, label="measured (eth0 counters)")
        ax.bar([x + 0.2 for x in xs], [(r["predicted_wire_bytes_per_node_step"] or 0) / 1e6 for r in wired],
               width=0.4, label="ring model of the engine's collectives")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{r['nodes']}n {r['link']}\n{r['_label']}" for r in wired],
                           fontsize=7, rotation=30, ha="right")
        ax.set_ylabel("inter-node MB per node per step")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "wire_bytes.png"), dpi=90)
        plt.close(fig)
        written.append("wire_bytes.png")
    return written
