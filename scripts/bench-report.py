#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the records of a `make bench` run into raw JSON, a summary, an rst report and a chart.

    bench-report.py --data DATA.txt [--console console.log] --out DIR [--host host.txt]
                    [--png FILE] [--doc Documentation/benchmarks.rst [--doc-png FILE]] [--brief]

DATA.txt holds the records that scripts/bench-guest.sh wrote to the VM's second serial port:
    BENCH-BEGIN <name> / base64 of gzip of the payload / BENCH-END <name>
(the console log, whose lines vm-init prefixes with "# ", is read instead when DATA.txt has no
records). Writes into DIR:
    fio/<target>/<job>/<rep>.json   fio's own JSON output
    cpu.jsonl                        CPU accounting per run (ticks of 10 ms, over the whole run)
    profile/<target>/<job>/<rep>.txt perf's report of the run (bench.sh --profile)
    meta.txt                         guest and device setup
    summary.json                     per target and job: median, min and max over repetitions
    report.rst                       the tables (also spliced into --doc between the markers)
Exit status 1 when no record could be read.
"""
import argparse
import base64
import gzip
import json
import os
import re
import shutil
import statistics
import sys

TARGET_LABEL = {
    "blktap-null": "blktap-rs null",
    "blktap-null-large": "blktap-rs null, large requests",
    "blktap-null-lowlat": "blktap-rs null, large + low latency",
    "ublk-null": "ublk null (rublk)",
    "blktap-null-deep": "blktap-rs null, large + deep ring (128)",
    "ublk-null-deep": "ublk null (rublk), depth 128",
    "nullb": "null_blk",
    "blktap-file": "blktap-rs file",
    "blktap-file-large": "blktap-rs file, all features + large",
    "blktap-file-sync": "blktap-rs file (--io sync)",
    "blktap-file-uring": "blktap-rs file (--io uring)",
    "blktap-ext4-sync": "blktap-rs file on ext4 (--io sync)",
    "blktap-ext4-uring": "blktap-rs file on ext4 (--io uring)",
    "loop": "loop (dio)",
    "ublk-loop": "ublk loop (rublk)",
    "tapdisk-blktap": "tapdisk via blktap-rs",
    "tapdisk-nbd": "tapdisk via NBD",
}
NULL_GROUP = ["blktap-null", "blktap-null-large", "blktap-null-lowlat", "blktap-null-deep", "ublk-null",
              "ublk-null-deep", "nullb"]
FILE_GROUP = ["blktap-file", "blktap-file-large", "blktap-file-sync", "blktap-file-uring", "blktap-ext4-sync",
              "blktap-ext4-uring", "loop", "ublk-loop"]
# The real tapdisk serving the same image through its tap (blktap-rs) or through its NBD socket
# and the kernel's NBD client.
TAPDISK_GROUP = ["tapdisk-blktap", "tapdisk-nbd"]
BEGIN_MARK = ".. bench-results-begin"
END_MARK = ".. bench-results-end"

# (title, numerator, denominator, jobs, goal). The first five are the V-XS ring's own; the
# rest are issue 22's, for the targets that negotiate its features (a daemon picks large
# requests alone, or with the low-latency mode).
QD1 = ["randread-4k-qd1", "randwrite-4k-qd1"]
QD32 = ["randread-4k-qd32", "randwrite-4k-qd32"]
MIB = ["read-1m-qd8", "write-1m-qd8"]
QD128 = ["randread-4k-qd128", "randwrite-4k-qd128"]
GOALS = [
    ("blktap-null / ublk-null, 4k QD32", "blktap-null", "ublk-null",
     ["randread-4k-qd32", "randwrite-4k-qd32"], 1.0),
    ("blktap-null / ublk-null, 44k sequential", "blktap-null", "ublk-null",
     ["read-44k-qd32", "write-44k-qd32"], 1.0),
    ("blktap-null / null_blk, 4k QD32", "blktap-null", "nullb",
     ["randread-4k-qd32", "randwrite-4k-qd32"], 0.5),
    ("blktap-file / loop, all jobs", "blktap-file", "loop", None, 0.9),
    ("tapdisk-blktap / tapdisk-nbd, all jobs", "tapdisk-blktap", "tapdisk-nbd", None, 2.0),
    ("blktap-null-large / ublk-null, all jobs", "blktap-null-large", "ublk-null", None, 1.0),
    ("blktap-null-large / ublk-null, 4k QD32", "blktap-null-large", "ublk-null", QD32, 1.5),
    ("blktap-null-lowlat / ublk-null, all jobs", "blktap-null-lowlat", "ublk-null", None, 1.0),
    ("blktap-null-lowlat / ublk-null, 4k QD32", "blktap-null-lowlat", "ublk-null", QD32, 1.5),
    ("blktap-file-large / loop, 4k QD32", "blktap-file-large", "loop", QD32, 1.0),
    ("blktap-file-large / loop, 1 MiB", "blktap-file-large", "loop", MIB, 0.9),
    ("blktap-file-large / ublk-loop, all jobs", "blktap-file-large", "ublk-loop", None, 1.0),
    # Deep rings (run only when named): both at depth 128.
    ("blktap-null-deep / ublk-null-deep, 4k QD128", "blktap-null-deep", "ublk-null-deep", QD128, 1.5),
]


def parse_records(text):
    """{name: bytes} from BEGIN/END records; lines may carry a "# " prefix (console)."""
    recs, name, buf = {}, None, []
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("# "):
            line = line[2:]
        line = line.strip()
        if line.startswith("BENCH-BEGIN "):
            name, buf = line.split(" ", 1)[1], []
        elif line.startswith("BENCH-END ") and name is not None:
            try:
                recs[name] = gzip.decompress(base64.b64decode("".join(buf)))
            except (ValueError, OSError, EOFError) as e:
                print(f"bench-report: record {name} is damaged ({e}); skipped", file=sys.stderr)
            name = None
        elif name is not None and re.fullmatch(r"[A-Za-z0-9+/=]+", line):
            buf.append(line)
    return recs


def fio_metrics(doc):
    job = doc["jobs"][0]
    ios = iops = bw = lat_sum = 0.0
    p99 = 0.0
    for d in ("read", "write"):
        s = job[d]
        n = s.get("total_ios", 0)
        if not n:
            continue
        ios += n
        iops += s["iops"]
        bw += s["bw_bytes"]
        lat = s.get("lat_ns") or s["clat_ns"]
        lat_sum += lat["mean"] * n
        pct = (lat.get("percentile") or s["clat_ns"].get("percentile") or {})
        p99 = max(p99, pct.get("99.000000", 0.0))
    if not ios:
        return None
    return {"iops": iops, "mbps": bw / 1e6, "lat_us": lat_sum / ios / 1e3, "p99_us": p99 / 1e3,
            "ios": ios, "usr_cpu": job.get("usr_cpu"), "sys_cpu": job.get("sys_cpu")}


def agg(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt_num(x, digits=3):
    """A figure with about `digits` significant digits, no exponent."""
    if x is None:
        return "-"
    if x >= 10 ** digits:
        return f"{x:,.0f}"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(f"{abs(x):e}".split("e")[1]))
    return f"{x:,.{decimals}f}"


def fmt_spread(a, digits=3):
    if a is None:
        return "-"
    if a["n"] == 1:
        return fmt_num(a["median"], digits)
    return f"{fmt_num(a['median'], digits)} ({fmt_num(a['min'], digits)}-{fmt_num(a['max'], digits)})"


def rst_table(header, rows):
    """A grid table (cells may hold anything but newlines)."""
    cols = list(zip(*([header] + rows)))
    widths = [max(len(str(c)) for c in col) for col in cols]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    hsep = sep.replace("-", "=")

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [sep, line(header), hsep]
    for r in rows:
        out += [line(r), sep]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--console")
    ap.add_argument("--out", required=True)
    ap.add_argument("--host")
    ap.add_argument("--png")
    ap.add_argument("--doc")
    ap.add_argument("--doc-png")
    ap.add_argument("--brief", action="store_true", help="print only the short table")
    a = ap.parse_args()

    text = open(a.data, errors="replace").read() if os.path.exists(a.data) else ""
    recs = parse_records(text)
    if not any(k.startswith("fio/") for k in recs):
        console = a.console or os.path.join(os.path.dirname(a.data), "console.log")
        if os.path.exists(console):
            recs = parse_records(open(console, errors="replace").read())
    if not recs:
        print("bench-report: no records found", file=sys.stderr)
        return 1

    os.makedirs(a.out, exist_ok=True)
    runs, cpu, meta = {}, {}, []
    for name, payload in sorted(recs.items()):
        kind, _, rest = name.partition("/")
        if kind == "fio":
            target, job, rep = rest.split("/")
            path = os.path.join(a.out, "fio", target, job)
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, f"{rep}.json"), "wb") as f:
                f.write(payload)
            try:
                m = fio_metrics(json.loads(payload))
            except (ValueError, KeyError) as e:
                print(f"bench-report: {name}: unreadable fio JSON ({e})", file=sys.stderr)
                continue
            if m:
                runs.setdefault((target, job), {})[int(rep)] = m
        elif kind == "cpu":
            c = json.loads(payload)
            cpu[(c["target"], c["job"], int(c["rep"]))] = c
        elif kind == "profile":
            path = os.path.join(a.out, "profile", os.path.dirname(rest))
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, os.path.basename(rest) + ".txt"), "wb") as f:
                f.write(payload)
        elif kind == "meta":
            meta.append(f"[{rest}]\n{payload.decode(errors='replace').rstrip()}")
    with open(os.path.join(a.out, "cpu.jsonl"), "w") as f:
        for k in sorted(cpu):
            f.write(json.dumps(cpu[k]) + "\n")
    with open(os.path.join(a.out, "meta.txt"), "w") as f:
        f.write("\n".join(meta) + "\n")
    host = {}
    if a.host and os.path.exists(a.host):
        for line in open(a.host):
            k, _, v = line.partition(":")
            host[k.strip()] = v.strip()
    cfg = {}
    for m in meta:
        for line in m.splitlines():
            if line.startswith("config:"):
                cfg["config"] = line[len("config: "):]
            elif line.startswith("kernel:"):
                cfg["kernel"] = line[len("kernel: "):]

    targets = []
    jobs = []
    for (t, j) in runs:
        if t not in targets:
            targets.append(t)
        if j not in jobs:
            jobs.append(j)
    order_t = NULL_GROUP + FILE_GROUP + TAPDISK_GROUP
    targets.sort(key=lambda t: order_t.index(t) if t in order_t else 99)
    job_order = re.findall(r"jobs=\[([^\]]*)\]", cfg.get("config", ""))
    if job_order:
        jo = job_order[0].split()
        jobs.sort(key=lambda j: jo.index(j) if j in jo else 99)

    # CPU per I/O: ticks (10 ms) in the steady-state window the guest measured, divided by the
    # fio I/Os completed in it (sectors moved / block size).
    def job_bs(j):
        mm = re.search(r"-(\d+)([km])-", j)
        return int(mm.group(1)) * (1024 if mm.group(2) == "k" else 1 << 20) if mm else None

    def window_ios(t, j, rep):
        c = cpu.get((t, j, rep))
        bs = job_bs(j)
        if not c or "rd_sectors" not in c or not bs:
            return None, c
        n = (c["rd_sectors"] + c["wr_sectors"]) * 512 / bs
        return (n if n > 0 else None), c

    dropped = []

    def window_ok(t, j, rep):
        """The counters' window must lie inside fio's steady state: its I/O rate must match
        fio's (a window that overran the end of the job, or started late, does not)."""
        n, c = window_ios(t, j, rep)
        m = runs.get((t, j), {}).get(rep)
        if not n or not m or not c.get("window_s"):
            return False
        ok = abs(n / c["window_s"] / m["iops"] - 1) <= 0.25
        if not ok and (t, j, rep) not in dropped:
            dropped.append((t, j, rep))
        return ok

    def cpu_per_io(t, j, rep, m, key):
        n, c = window_ios(t, j, rep)
        if not n or not window_ok(t, j, rep):
            return None
        return c[key] * 1e6 / c["user_hz"] / n

    def reqs_per_io(t, j, rep):
        n, c = window_ios(t, j, rep)
        if not n:
            return None
        return (c["rd_reqs"] + c["wr_reqs"]) / n

    summary = {}
    for (t, j), reps in runs.items():
        s = {}
        for key in ("iops", "mbps", "lat_us", "p99_us"):
            s[key] = agg([m[key] for m in reps.values()])
        s["cpu_us_per_io"] = agg([cpu_per_io(t, j, r, m, "busy_ticks") for r, m in reps.items()])
        s["server_cpu_us_per_io"] = agg([cpu_per_io(t, j, r, m, "server_ticks")
                                         for r, m in reps.items()]) if t not in ("nullb", "loop") else None
        s["reqs_per_io"] = agg([reqs_per_io(t, j, r) for r in reps])
        s["reps"] = sorted(reps)
        summary[f"{t}/{j}"] = s

    def ratio(num, den, j, key="iops"):
        """Ratio of medians, and the min-max of the per-repetition ratios (same repetition =
        measured minutes apart, so host drift cancels out best there)."""
        rn, rd = runs.get((num, j)), runs.get((den, j))
        if not rn or not rd:
            return None
        med = statistics.median(m[key] for m in rn.values()) / statistics.median(m[key] for m in rd.values())
        per = [rn[r][key] / rd[r][key] for r in rn if r in rd and rd[r][key]]
        return {"median": med, "min": min(per) if per else med, "max": max(per) if per else med,
                "n": len(per)}

    ratios = {}
    for j in jobs:
        for num, den in (("blktap-null", "ublk-null"), ("blktap-null", "nullb"),
                         ("blktap-null-large", "ublk-null"), ("blktap-null-large", "nullb"),
                         ("blktap-null-lowlat", "ublk-null"), ("blktap-null-lowlat", "nullb"),
                         ("ublk-null", "nullb"), ("blktap-file", "loop"),
                         ("blktap-file", "ublk-loop"), ("blktap-file-large", "loop"),
                         ("blktap-file-large", "ublk-loop"), ("ublk-loop", "loop"),
                         ("tapdisk-blktap", "tapdisk-nbd"), ("tapdisk-blktap", "loop"),
                         ("tapdisk-nbd", "loop"), ("blktap-null-deep", "ublk-null-deep"),
                         ("blktap-null", "ublk-null-deep"), ("blktap-null-deep", "blktap-null")):
            r = ratio(num, den, j)
            if r:
                ratios[f"{num}:{den}/{j}"] = r
    if dropped:
        print(f"bench-report: CPU accounting dropped for {len(dropped)} run(s) whose counter "
              "window did not match fio's I/O rate: " + ", ".join("/".join(map(str, d)) for d in dropped[:8]),
              file=sys.stderr)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump({"host": host, "guest": cfg, "summary": summary, "ratios": ratios}, f, indent=1)

    # --- rst ----------------------------------------------------------------------------
    def rr(num, den, j):
        r = ratios.get(f"{num}:{den}/{j}")
        if not r:
            return "-"
        if r["n"] <= 1:
            return f"{r['median']:.2f}x"
        return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"

    out = []
    nrep = max((len(v) for v in runs.values()), default=0)
    out.append("Run\n---\n")
    info = [
        ("date", host.get("date", "?")),
        ("guest kernel", cfg.get("kernel", "?")),
        ("VM", host.get("vm", "?") + f", host {host.get('host_cpu', '?')}"),
        ("QEMU", host.get("qemu", "?")),
        ("fio matrix", cfg.get("config", "?")),
        ("host load (1-min avg)", f"{host.get('load_begin', '?').split()[0] if host.get('load_begin') else '?'} at start, "
         f"{host.get('load_end', '?').split()[0] if host.get('load_end') else '?'} at end; "
         f"samples every 15 s: {host.get('load_samples', '?')}"),
        ("total time of `make bench`", f"{host.get('total_s', '?')} s (kernel and tools already built)"),
    ]
    if host.get("load_vm", "none") != "none":
        info.append(("load", host["load_vm"]))
    if host.get("skipped", "none") != "none":
        info.append(("targets skipped", host["skipped"]))
    for k, v in info:
        out.append(f"- **{k}**: {v}")
    out.append("")
    out.append(f"Figures are medians of {nrep} repetitions; brackets give the min-max over the "
               "repetitions (for ratios: the min-max of the ratio taken within each repetition). "
               "Under TCG only ratios between targets of the same run mean anything.\n")

    out.append("Goals met?\n----------\n")
    rows = []
    for title, num, den, gjobs, goal in GOALS:
        for j in (gjobs or jobs):
            r = ratios.get(f"{num}:{den}/{j}")
            if not r:
                continue
            verdict = "met" if r["median"] >= goal else "MISSED"
            rows.append([title if j == (gjobs or jobs)[0] else "", j, f">= {goal:.1f}x",
                         rr(num, den, j), verdict])
    if rows:
        out.append(rst_table(["goal", "job", "target", "IOPS ratio (median, per-rep range)", "verdict"], rows))
        out.append("")

    out.append("IOPS ratios\n-----------\n")
    rows = []
    for j in jobs:
        rows.append([j, rr("blktap-null", "ublk-null", j), rr("blktap-null", "nullb", j),
                     rr("ublk-null", "nullb", j), rr("blktap-file", "loop", j),
                     rr("blktap-file", "ublk-loop", j), rr("ublk-loop", "loop", j)])
    out.append(rst_table(["job", "blktap-null / ublk-null", "blktap-null / null_blk",
                          "ublk-null / null_blk", "blktap-file / loop", "blktap-file / ublk-loop",
                          "ublk-loop / loop"], rows))
    out.append("")

    for title, group in (("Null targets", NULL_GROUP), ("File targets (1 GiB image on tmpfs)", FILE_GROUP),
                         ("tapdisk targets (the same image)", TAPDISK_GROUP)):
        grp = [t for t in group if t in targets]
        if not grp:
            continue
        out.append(f"{title}\n{'-' * len(title)}\n")
        rows = []
        for j in jobs:
            for t in grp:
                s = summary.get(f"{t}/{j}")
                if not s:
                    continue
                if group is NULL_GROUP:
                    extra = [rr(t, "ublk-null", j) if t.startswith("blktap-null") else "",
                             rr(t, "nullb", j) if t != "nullb" else ""]
                elif group is TAPDISK_GROUP:
                    extra = [rr(t, "tapdisk-nbd", j) if t != "tapdisk-nbd" else "",
                             rr(t, "loop", j)]
                else:
                    extra = [rr(t, "loop", j) if t != "loop" else "",
                             rr(t, "ublk-loop", j) if t in ("blktap-file", "blktap-file-large") else ""]
                rows.append([j if t == grp[0] else "", TARGET_LABEL.get(t, t), fmt_spread(s["iops"]),
                             fmt_num(s["mbps"]["median"]), fmt_num(s["lat_us"]["median"]),
                             fmt_num(s["p99_us"]["median"]),
                             fmt_num(s["reqs_per_io"]["median"], 2) if s["reqs_per_io"] else "-",
                             fmt_num(s["cpu_us_per_io"]["median"]) if s["cpu_us_per_io"] else "-",
                             fmt_num(s["server_cpu_us_per_io"]["median"]) if s["server_cpu_us_per_io"] else "-"]
                            + extra)
        hdr = ["job", "target", "IOPS (min-max)", "MB/s", "mean lat us", "p99 lat us",
               "disk reqs/IO", "CPU us/IO", "server CPU us/IO"]
        if group is NULL_GROUP:
            hdr += ["vs ublk-null", "vs null_blk"]
        elif group is TAPDISK_GROUP:
            hdr += ["vs tapdisk-nbd", "vs loop"]
        else:
            hdr += ["vs loop", "vs ublk-loop"]
        out.append(rst_table(hdr, rows))
        out.append("")

    # tapdisk through blktap-rs against the same tapdisk through NBD, per job: IOPS, latency
    # and CPU, each as blktap / NBD (below 1 is better for latency and CPU).
    if all(t in targets for t in TAPDISK_GROUP):
        def med_ratio(j, key):
            a, b = summary.get(f"tapdisk-blktap/{j}"), summary.get(f"tapdisk-nbd/{j}")
            if not a or not b or not a.get(key) or not b.get(key) or not b[key]["median"]:
                return "-"
            return f"{a[key]['median'] / b[key]['median']:.2f}x"

        def pair(j, key):
            a, b = summary.get(f"tapdisk-blktap/{j}"), summary.get(f"tapdisk-nbd/{j}")
            fa = fmt_num(a[key]["median"]) if a and a.get(key) else "-"
            fb = fmt_num(b[key]["median"]) if b and b.get(key) else "-"
            return f"{fa} / {fb}"

        out.append("tapdisk: blktap-rs vs NBD\n-------------------------\n")
        out.append("The same tapdisk 3.55.5 and image; each cell is tapdisk-blktap / tapdisk-nbd. "
                   "IOPS ratio above 1, latency and CPU ratios below 1 favour blktap-rs. CPU is "
                   "the busy time of both vCPUs per I/O; tapdisk CPU is the tapdisk process's "
                   "own (the NBD path also spends time in nbd.ko's receive worker, which counts "
                   "in the first only).\n")
        rows = []
        for j in jobs:
            if f"tapdisk-blktap/{j}" not in summary or f"tapdisk-nbd/{j}" not in summary:
                continue
            rows.append([j, rr("tapdisk-blktap", "tapdisk-nbd", j),
                         pair(j, "lat_us"), med_ratio(j, "lat_us"), pair(j, "p99_us"),
                         pair(j, "cpu_us_per_io"), med_ratio(j, "cpu_us_per_io"),
                         pair(j, "server_cpu_us_per_io")])
        out.append(rst_table(["job", "IOPS ratio", "mean lat us", "lat ratio", "p99 lat us",
                              "CPU us/IO", "CPU ratio", "tapdisk CPU us/IO"], rows))
        out.append("")

    # Where the time goes at QD1: latency above null_blk's (the block layer alone).
    qd1 = [j for j in jobs if j.endswith("-qd1")]
    if qd1 and "nullb" in targets:
        out.append("Latency above the block layer (QD1)\n-----------------------------------\n")
        rows = []
        for j in qd1:
            base = summary.get(f"nullb/{j}")
            if not base:
                continue
            b = base["lat_us"]["median"]
            for t in ("nullb", "ublk-null", "blktap-null", "blktap-null-large", "blktap-null-lowlat",
                      "loop", "ublk-loop", "blktap-file", "blktap-file-large",
                      "tapdisk-blktap", "tapdisk-nbd"):
                s = summary.get(f"{t}/{j}")
                if not s:
                    continue
                lat = s["lat_us"]["median"]
                rows.append([j if t == "nullb" else "", TARGET_LABEL.get(t, t), fmt_num(lat),
                             fmt_num(lat - b) if t != "nullb" else "0",
                             fmt_num(s["cpu_us_per_io"]["median"]) if s["cpu_us_per_io"] else "-",
                             fmt_num(s["server_cpu_us_per_io"]["median"]) if s["server_cpu_us_per_io"] else "-"])
        out.append(rst_table(["job", "target", "mean lat us", "above null_blk us", "CPU us/IO",
                              "server CPU us/IO"], rows))
        out.append("")
    # Batching of the blktap-rs data path, from the tap's own counters over the same window:
    # requests per wake-up of the daemon, per poll that sent requests and per RESPOND.
    def tap_batch(t, j, key):
        vals = []
        for rep in runs.get((t, j), {}):
            c = cpu.get((t, j, rep)) or {}
            if c.get("tap_sent") and c.get(key):
                vals.append(c["tap_sent"] / c[key])
        return agg(vals)

    brows = []
    for t in ("blktap-null", "blktap-null-large", "blktap-null-lowlat", "blktap-null-deep",
              "blktap-file", "blktap-file-large", "tapdisk-blktap"):
        for j in jobs:
            b = [tap_batch(t, j, k) for k in ("tap_wakeups", "tap_dispatches", "tap_responds")]
            if any(b):
                brows.append([TARGET_LABEL.get(t, t), j] +
                             [fmt_num(x["median"], 2) if x else "-" for x in b])
    if brows:
        out.append("Batching (blktap-rs)\n--------------------\n")
        out.append("Ring requests per wake-up of the daemon, per poll that sent requests (one "
                   "``poll`` syscall each, or ``select`` for tapdisk) and per ``RESPOND`` ioctl, "
                   "over the same window as the CPU figures (medians of the repetitions).\n")
        out.append(rst_table(["target", "job", "requests / wake-up", "requests / poll",
                              "requests / RESPOND"], brows))
        out.append("")
    report = "\n".join(out)
    with open(os.path.join(a.out, "report.rst"), "w") as f:
        f.write(report + "\n")

    # --- chart ----------------------------------------------------------------------------
    png_ok = False
    if a.png:
        try:
            png_ok = chart(a.png, runs, jobs, targets)
        except ImportError:
            print("bench-report: matplotlib not available: no chart (pip install matplotlib)",
                  file=sys.stderr)

    # --- doc --------------------------------------------------------------------------------
    if a.doc:
        splice = report
        if png_ok and a.doc_png:
            shutil.copyfile(a.png, a.doc_png)
            splice += ("\n.. figure:: " + os.path.basename(a.doc_png) +
                       "\n   :width: 100%\n\n   IOPS of the user-space servers relative to the "
                       "in-kernel driver of their group (null_blk, loop), and of tapdisk through "
                       "blktap-rs relative to the same tapdisk through NBD, log scale; bars: ratio "
                       "of the medians, whiskers: range of the per-repetition ratios.\n")
        doc = open(a.doc).read() if os.path.exists(a.doc) else ""
        block = f"{BEGIN_MARK} (generated by scripts/bench-report.py; edits are lost)\n\n{splice}\n{END_MARK}\n"
        if BEGIN_MARK in doc and END_MARK in doc:
            head = doc[:doc.index(BEGIN_MARK)]
            tail = doc[doc.index(END_MARK) + len(END_MARK):].lstrip("\n")
            doc = head + block + ("\n" + tail if tail else "")
        else:
            doc = doc.rstrip("\n") + ("\n\n" if doc else "") + "Results\n=======\n\n" + block
        with open(a.doc, "w") as f:
            f.write(doc)
        print(f"bench-report: updated {a.doc}", file=sys.stderr)

    if a.brief:
        for (t, j), reps in sorted(runs.items()):
            s = summary[f"{t}/{j}"]
            print(f"bench: {t:12} {j:18} {s['iops']['median']:10.0f} IOPS  "
                  f"lat {s['lat_us']['median']:.1f} us  p99 {s['p99_us']['median']:.1f} us")
        for k, r in ratios.items():
            print(f"bench: ratio {k}: {r['median']:.2f}x")
    else:
        print(report)
    print(f"bench-report: {sum(len(v) for v in runs.values())} fio runs in {a.out}", file=sys.stderr)
    return 0


def chart(path, runs, jobs, targets):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(g, ref) for g, ref in ((NULL_GROUP, "nullb"), (FILE_GROUP, "loop"),
                                      (TAPDISK_GROUP, "tapdisk-nbd"))
              if ref in targets and any(t in targets for t in g if t != ref)]
    if not groups:
        return False
    fig, axes = plt.subplots(len(groups), 1, figsize=(12, 4.5 * len(groups)), squeeze=False)
    colors = {"blktap-null": "#d62728", "blktap-null-large": "#ff7f0e",
              "blktap-null-lowlat": "#9467bd", "ublk-null": "#1f77b4",
              "blktap-file": "#d62728", "blktap-file-large": "#ff7f0e", "ublk-loop": "#1f77b4",
              "tapdisk-blktap": "#d62728"}
    for ax, (group, ref) in zip(axes[:, 0], groups):
        grp = [t for t in group if t in targets and t != ref]
        width = min(0.8 / len(grp), 0.4)
        for i, t in enumerate(grp):
            med, lo, hi = [], [], []
            for j in jobs:
                # Same figures as the tables: ratio of the medians, whiskers from the range of
                # the per-repetition ratios.
                rt, rf = runs.get((t, j)), runs.get((ref, j))
                per = [rt[r]["iops"] / rf[r]["iops"] for r in (rt or {}) if r in (rf or {})]
                if not per:
                    med.append(float("nan")); lo.append(0); hi.append(0)
                    continue
                m_ = (statistics.median(m["iops"] for m in rt.values()) /
                      statistics.median(m["iops"] for m in rf.values()))
                med.append(m_); lo.append(max(0, m_ - min(per))); hi.append(max(0, max(per) - m_))
            xs = [x + (i - (len(grp) - 1) / 2) * width for x in range(len(jobs))]
            ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=TARGET_LABEL.get(t, t),
                   color=colors.get(t))
            for x, v, h in zip(xs, med, hi):
                if v == v:
                    ax.text(x, (v + h) * 1.06, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.text(len(jobs) - 0.5, 1.0, f" {TARGET_LABEL[ref]} = 1", va="bottom", ha="right", fontsize=8)
        ax.set_xticks(range(len(jobs)))
        ax.set_xticklabels(jobs, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel(f"IOPS / IOPS of {TARGET_LABEL[ref]} (log)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
        ax.grid(axis="y", alpha=0.3, which="both")
    fig.suptitle("blktap-rs and ublk IOPS relative to the in-kernel driver; tapdisk via blktap-rs "
                 "relative to tapdisk via NBD\n(QEMU TCG; ratio of medians, whiskers: range of the "
                 "per-repetition ratios)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


if __name__ == "__main__":
    sys.exit(main())
