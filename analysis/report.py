#!/usr/bin/python3
"""The report of `quilt reproduce`: DIR/index.html and DIR/report.md from what the reproduction
left in DIR.

Reads DIR/reproduce.json (written by `quilt reproduce`: experiments, analysis steps, exit codes,
wall times, logs), the result files DIR/<experiment>.h5 through the `quilt` Python module
(quilt.read_results: provenance, scale, time model, board profile, run status) and each analysis
step's outputs in DIR/analysis/<step>/ (PNG figures, CSV tables, TXT texts with the paper's
numbers beside Quilt's and the verdict lines). Lines of those texts that contain SHOWS, DOES NOT
SHOW or INCONCLUSIVE are collected into the verdict table at the top.

Self-contained: images by relative path, inline CSS, no network resource. Opening index.html with
`?check` appends a <pre id="quilt-check"> with a JSON summary (images loaded, tables, sections)
for the browser test (tests/python/test_reproduce.py).

Usage: /usr/bin/python3 analysis/report.py DIR   (PYTHONPATH must reach the `quilt` module;
`quilt reproduce` sets it). Exit codes: 0 written, 2 DIR has no reproduce.json.
"""
import csv
import datetime
import html
import json
import os
import re
import sys

# The paper's headline numbers per experiment (QuiltNet, DAC 2022), shown beside Quilt's: the
# analysis scripts print the detailed comparison.
PAPER_HEADLINES = {
    "efficiency": "throughput +20.8% (ResNet-50, R=64), +30.5% (UNet, R=7.5), +21.4% "
                  "(EfficientNet-B0, R=8); energy efficiency +19.2% / +28.4% / +17.5%",
    "breakdown": "communication time shrinks with R; the autoencoder costs < 0.4% of compute",
    "interposition": "normalized performance 1.22 / 1.26 / 1.31 with R=64 after stage 1 / 2 / 3",
    "interposition_multi": "normalized performance 1.44 with R=64 after every stage (four boards)",
    "partition_auto": "the cost-model search cuts ResNet-50 between stage 3 and 4",
    "feasibility": "MLP 512-512 with a 512x autoencoder: -0.05% accuracy on average",
    "accuracy": "ResNet-50 on ImageNet, R=64 after stage 3: top-1 error 23.85 -> 25.54%, "
                "top-5 7.13 -> 8.10%",
    "weight_freezing": "top-1 without -> with freezing: ResNet50-Quilt 64x 95.22 -> 95.62%, UNet-Quilt 120x "
                       "88.55 -> 92.66, EfficientNet-Quilt 64x 88.59 -> 90.52",
    "tradeoff": "accuracy loss 0.4 pt at R=64 (ResNet-50), rising beyond; the autoencoder-only "
                "proxy is 76.9x cheaper than full training",
    "interposition_accuracy": "ResNet-50 on CIFAR-10: 96.05% without, 95.91 / 95.62 / 95.58% "
                              "after stage 1 / 2 / 3, 95.46% with three",
}

VERDICT_RE = re.compile(r"\b(DOES NOT SHOW|INCONCLUSIVE|SHOWS)\b")
MAX_TABLE_ROWS = 200
TAIL_LINES = 40


def read_text(path, limit=200_000):
    try:
        with open(path, errors="replace") as f:
            return f.read(limit)
    except OSError:
        return ""


def tail(path, n=TAIL_LINES):
    lines = read_text(path, 5_000_000).splitlines()
    return "\n".join(lines[-n:])


FOOTER_RE = re.compile(r"^==== \S+ exit -?\d+(?: \(signal \d+\))? after ([0-9.]+) s$", re.M)


def logged_wall_s(path):
    """Seconds the experiment ran over every invocation of quilt reproduce (its log's footers)."""
    return sum(float(x) for x in FOOTER_RE.findall(read_text(path, 50_000_000)))


def span(x):
    """When this invocation ran the experiment, in seconds since quilt reproduce started: with
    --jobs N the overlapping spans are the experiments that ran at the same time."""
    start, end = x.get("start_s", -1), x.get("end_s", -1)
    if start is None or start < 0:
        return "–"
    return f"+{fmt_s(start)} – " + (f"+{fmt_s(end)}" if end is not None and end >= 0 else "…")


def jobs_text(man):
    return f"{man.get('jobs', 1)} job(s) at a time"


def read_csv(path):
    try:
        with open(path, newline="", errors="replace") as f:
            return [row for row in csv.reader(f)]
    except OSError:
        return []


def fmt_s(s):
    if s is None or s != s or s < 0:
        return "–"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def load_results(path):
    """(record dict or None, error text)."""
    if not os.path.exists(path):
        return None, "no result file"
    try:
        import quilt  # the pybind11 module (build/<preset>/python)
    except ImportError as e:
        return None, f"the quilt Python module is not importable ({e}); set PYTHONPATH"
    try:
        return quilt.read_results(path), ""
    except Exception as e:  # a damaged or foreign file: the report says so
        return None, str(e)


def summarize(rec):
    """What the report shows of one result file."""
    runs = rec.get("runs", [])
    prov = rec.get("provenance", {})
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    invalid = [r for r in runs if r.get("validity", "valid") != "valid"]
    pipeline = [r for r in runs if not r.get("training")]
    params = lambda key: sorted({r.get("params", {}).get(key, "") for r in pipeline} - {""})
    run_s = sum(max(0.0, r.get("end_unix_s", 0) - r.get("start_unix_s", 0)) for r in runs)
    reasons = []
    for r in failed:
        if r.get("failure") and r["failure"] not in reasons:
            reasons.append(r["failure"])
    stand_ins = sorted({r["training"].get("stand_in", "") for r in runs if r.get("training")} - {""})
    return {
        "runs": len(runs), "ok": len(ok), "failed": len(failed), "invalid": len(invalid),
        "reasons": reasons[:5],
        "time_model": ", ".join(params("boards.time_model")) or ("n/a (training)" if runs else "–"),
        "profile": ", ".join(params("boards.profile")) or ("n/a (training)" if runs else "–"),
        "backend": ", ".join(params("boards.backend")),
        "run_s": run_s,
        "scale": prov.get("scale", ""),
        "stand_in": "; ".join(stand_ins),
        "prov": prov,
    }


def step_outputs(root, step):
    """Figures, CSV tables and texts an analysis step wrote, as paths relative to root."""
    d = os.path.join(root, step["out_dir"])
    files = sorted(os.listdir(d)) if os.path.isdir(d) else []
    rel = lambda f: os.path.join(step["out_dir"], f)
    return ([rel(f) for f in files if f.lower().endswith(".png")],
            [rel(f) for f in files if f.lower().endswith(".csv")],
            [rel(f) for f in files if f.lower().endswith(".txt")])


def verdict_lines(text):
    """[(verdict, line)] for every line naming one, in order, without repeats."""
    out, seen = [], set()
    for line in text.splitlines():
        m = VERDICT_RE.search(line)
        s = line.strip()
        if m and s and s not in seen:
            seen.add(s)
            out.append((m.group(1), s))
    return out


def collect(root):
    with open(os.path.join(root, "reproduce.json")) as f:
        man = json.load(f)
    exps = []
    for e in man["experiments"]:
        rec, err = load_results(os.path.join(root, e["result"]))
        e = dict(e, record_error=err, summary=summarize(rec) if rec else None,
                 total_wall_s=logged_wall_s(os.path.join(root, e["log"])))
        e["log_tail"] = tail(os.path.join(root, e["log"])) if e["status"] in (
            "failed", "interrupted") else ""
        e["steps"] = []
        exps.append(e)
    by_name = {e["name"]: e for e in exps}
    verdicts = []
    for s in man["analysis"]:
        s = dict(s)
        s["figures"], s["tables"], s["texts"] = step_outputs(root, s)
        s["log_text"] = read_text(os.path.join(root, s["log"]))
        texts = "\n".join(read_text(os.path.join(root, t)) for t in s["texts"])
        found = verdict_lines(texts) or verdict_lines(s["log_text"])
        for v, line in found:
            verdicts.append({"experiment": s["experiment"], "step": s["name"], "verdict": v,
                             "line": line})
        s["log_tail"] = tail(os.path.join(root, s["log"])) if s["status"] == "failed" else ""
        by_name.get(s["experiment"], exps[0])["steps"].append(s)
    return man, exps, verdicts


def board_profiles(man, exps):
    """[(name, path, text)] of the board profiles the pipeline runs used."""
    names = []
    for x in exps:
        for n in ((x["summary"] or {}).get("profile", "")).split(", "):
            if n and not n.startswith("n/a") and n != "–" and n not in names:
                names.append(n)
    out = []
    for n in names:
        for path in (os.path.join(man["source_dir"], "backends", "profiles", n + ".yaml"), n):
            if os.path.isfile(path):
                out.append((n, path, read_text(path)))
                break
        else:
            out.append((n, "", "(profile file not found)"))
    return out


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
img{max-width:100%;border:1px solid #ddd}.ok{color:#176f2c}.failed{color:#b00020;font-weight:bold}
.SHOWS{background:#e3f4e6}.DOES-NOT-SHOW{background:#fde2e2}.INCONCLUSIVE{background:#fff4d6}
.muted{color:#666}.scroll{overflow-x:auto}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
"""

CHECK_JS = """
window.addEventListener('load', function () {
  if (!/(^|[?&#])check\\b/.test(location.search.slice(1) + '#' + location.hash.slice(1))) return;
  var imgs = Array.prototype.slice.call(document.images);
  var good = function (i) { return i.complete && i.naturalWidth > 0; };
  var r = {
    images: imgs.length,
    loaded: imgs.filter(good).length,
    broken: imgs.filter(function (i) { return !good(i); }).map(function (i) { return i.getAttribute('src'); }),
    tables: Array.prototype.map.call(document.querySelectorAll('table'), function (t) {
      return {id: t.id, cls: t.className, rows: t.rows.length}; }),
    sections: Array.prototype.map.call(document.querySelectorAll('section.experiment'),
      function (s) { return s.id; })
  };
  var pre = document.createElement('pre');
  pre.id = 'quilt-check';
  pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
"""

e_ = html.escape


def html_table(header, rows, table_id="", cls=""):
    attrs = (f' id="{e_(table_id)}"' if table_id else "") + (f' class="{e_(cls)}"' if cls else "")
    out = [f'<div class="scroll"><table{attrs}><thead><tr>' + "".join(f"<th>{e_(str(h))}</th>" for h in header)
           + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for c in row:
            if isinstance(c, tuple):  # (html already escaped, css class)
                cells.append(f'<td class="{e_(c[1])}">{c[0]}</td>')
            else:
                cells.append(f"<td>{e_(str(c))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def status_cell(status):
    cls = "ok" if status in ("ok", "complete") else "failed" if status in (
        "failed", "interrupted") else "muted"
    return (e_(status), cls)


def exit_text(x):
    if x.get("signal"):
        return f"signal {x['signal']}"
    return "–" if x.get("exit_code", -1) < 0 else str(x["exit_code"])


def write_html(root, man, exps, verdicts):
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>Quilt reproduction of QuiltNet (DAC 2022), scale {e_(man['scale'])}</title>",
         f"<style>{CSS}</style><script>{CHECK_JS}</script></head><body>"]
    h.append(f"<h1>Quilt reproduction of QuiltNet (DAC 2022): scale <code>{e_(man['scale'])}</code></h1>")
    failed = [x for x in exps if x["status"] in ("failed", "interrupted")]
    failed_steps = [s for x in exps for s in x["steps"] if s["status"] == "failed"]
    h.append(f"<p>Generated {e_(datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))} on "
             f"<code>{e_(man['host'])}</code>; started {e_(man['started_utc'])}, "
             f"{e_(fmt_s(man['wall_s']))} this invocation, "
             f"{e_(fmt_s(sum(x['total_wall_s'] for x in exps)))} of experiment runs over all "
             f"invocations; launcher <code>{e_(man['launcher'])}</code>, {e_(jobs_text(man))}. "
             f"{len(exps) - len(failed)} of {len(exps)} experiments without failure, "
             f"{len(failed_steps)} analysis step(s) failed."
             + (" <b>Interrupted by signal " + str(man["interrupted_by_signal"]) + ".</b>"
                if man.get("interrupted_by_signal") else "") + "</p>")
    if man["scale"] == "smoke":
        h.append("<p><b>Smoke scale</b>: tiny batches, epochs and data subsets so that the whole "
                 "pipeline runs in minutes. Its numbers and verdicts say nothing about the paper's "
                 "claims; run <code>quilt reproduce --scale here</code> for the measurement.</p>")

    h.append('<h2 id="verdicts">Verdicts</h2>')
    h.append("<p>Every line of the analysis outputs that states a verdict (SHOWS, DOES NOT SHOW, "
             "INCONCLUSIVE), as the script printed it with the paper's number beside Quilt's.</p>")
    h.append(html_table(["experiment", "analysis", "verdict", "claim, paper vs Quilt"],
                        [[v["experiment"], v["step"],
                          (e_(v["verdict"]), v["verdict"].replace(" ", "-")), v["line"]]
                         for v in verdicts] or [["–", "–", "–", "no verdict lines found"]],
                        table_id="verdict-table"))

    h.append('<h2 id="paper">The paper\'s numbers</h2>')
    h.append(html_table(["experiment", "paper", "the paper reports"],
                        [[(f'<a href="#exp-{e_(x["name"])}">{e_(x["name"])}</a>', ""), x["paper"],
                          PAPER_HEADLINES.get(x["name"], "–")] for x in exps],
                        table_id="paper-table"))
    h.append('<h2 id="overview">Experiments</h2>')
    rows = []
    for x in exps:
        s = x["summary"] or {}
        rows.append([(f'<a href="#exp-{e_(x["name"])}">{e_(x["name"])}</a>', ""), x["paper"],
                     x["ranks"], f"{s.get('ok', 0)}/{x['runs']}", status_cell(x["status"]),
                     exit_text(x), fmt_s(x["total_wall_s"]), fmt_s(x["wall_s"]),
                     fmt_s(s.get("run_s")), s.get("time_model", "–"), s.get("profile", "–"),
                     span(x)])
    h.append(html_table(["experiment", "paper", "ranks", "runs ok", "status", "exit",
                         "wall time (all invocations)", "this invocation", "run time in file",
                         "time model", "board profile", "ran (since start)"], rows,
                        table_id="experiments-table"))

    h.append('<h2 id="provenance">Provenance</h2>')
    rows = []
    for x in exps:
        p = (x["summary"] or {}).get("prov", {})
        if not p:
            rows.append([x["name"], "–", "–", "–", "–", "–", "–", "–", "–"])
            continue
        rows.append([x["name"], p.get("git_commit", "")[:12] + (" (dirty)" if p.get("git_dirty") else ""),
                     ", ".join(sorted(set(p.get("hosts", [])))), p.get("created_utc", ""),
                     p.get("scale", ""), p.get("quilt_version", ""), p.get("torch_version", ""),
                     p.get("mpi_version", ""), f"{p.get('hdf5_version', '')} / XRT {p.get('xrt_version', '')}"])
    h.append(html_table(["experiment", "git commit", "hosts", "created (UTC)", "scale", "Quilt",
                         "LibTorch", "MPI", "HDF5 / XRT"], rows, table_id="provenance-table"))
    h.append(f"<p class=\"muted\">quilt reproduce ran with <code>--jobs {e_(str(man.get('jobs', 1)))}</code> "
             f"(launcher <code>{e_(man['launcher'])}</code>). Binary: <code>{e_(man['quilt'])}</code>; sources: "
             f"<code>{e_(man['source_dir'])}</code>; manifest: <a href=\"reproduce.json\">reproduce.json</a>.</p>")

    profiles = board_profiles(man, exps)
    if profiles:
        h.append('<h2 id="profiles">Board profiles</h2>')
        h.append("<p>The profiles that time the emulated boards (dilated and modeled time models), "
                 "with the source of each number.</p>")
        for n, path, text in profiles:
            h.append(f"<details><summary><code>{e_(n)}</code> {e_(path)}</summary>"
                     f"<pre>{e_(text)}</pre></details>")

    for x in exps:
        h.append(f'<section class="experiment" id="exp-{e_(x["name"])}">')
        h.append(f"<h2>{e_(x['name'])}: {e_(x['paper'])}</h2>")
        if x["name"] in PAPER_HEADLINES:
            h.append(f"<p><b>The paper:</b> {e_(PAPER_HEADLINES[x['name']])}.</p>")
        s = x["summary"]
        h.append(f"<p>Status <span class=\"{status_cell(x['status'])[1]}\">{e_(x['status'])}</span>"
                 + (f" ({e_(x['reason'])})" if x["reason"] else "")
                 + f"; {x['ranks']} rank(s); file <code>{e_(x['file'])}</code> at scale "
                 f"<code>{e_(man['scale'])}</code>; result <code>{e_(x['result'])}</code>; "
                 f"log <a href=\"{e_(x['log'])}\">{e_(x['log'])}</a>; wall time "
                 f"{e_(fmt_s(x['total_wall_s']))} over all invocations "
                 f"({e_(fmt_s(x['wall_s']))} this one"
                 + (f", from {e_(x['started_utc'])} to {e_(x['ended_utc'] or '…')}"
                    if x.get("started_utc") else "")
                 + f"), {e_(fmt_s((s or {}).get('run_s')))} of runs recorded in the file.</p>")
        if x["command"]:
            h.append(f"<pre>{e_(x['command'])}</pre>")
        if x["config_error"]:
            h.append(f"<p class=\"failed\">The file does not load: {e_(x['config_error'])}</p>")
        if s:
            h.append(f"<p>Runs: {s['ok']} ok, {s['failed']} failed, {s['invalid']} invalid of "
                     f"{s['runs']}; time model {e_(s['time_model'])}; board profile "
                     f"{e_(s['profile'])}" + (f"; {e_(s['stand_in'])}" if s["stand_in"] else "")
                     + ".</p>")
            for r in s["reasons"]:
                h.append(f"<p class=\"failed\">Run failure: {e_(r)}</p>")
        elif x["record_error"]:
            h.append(f"<p class=\"muted\">Result file: {e_(x['record_error'])}</p>")
        if x["log_tail"]:
            h.append(f"<p class=\"failed\">{e_(x['status'].capitalize())} (exit "
                     f"{e_(exit_text(x))}); the end of its log:</p>"
                     f"<pre>{e_(x['log_tail'])}</pre>")
        for st in x["steps"]:
            h.append(f"<h3>{e_(st['name'])}</h3>")
            h.append(f"<p>Status <span class=\"{status_cell(st['status'])[1]}\">{e_(st['status'])}</span>"
                     + (f" ({e_(st['reason'])})" if st["reason"] else "")
                     + f"; inputs {e_(', '.join(st['inputs']))}; log "
                     f"<a href=\"{e_(st['log'])}\">{e_(st['log'])}</a>.</p>")
            if st["log_tail"]:
                h.append(f"<pre>{e_(st['log_tail'])}</pre>")
            for fig in st["figures"]:
                h.append(f'<figure><img src="{e_(fig)}" alt="{e_(os.path.basename(fig))}">'
                         f"<figcaption>{e_(fig)}</figcaption></figure>")
            for t in st["texts"]:
                h.append(f"<p class=\"muted\">{e_(t)}</p><pre>{e_(read_text(os.path.join(root, t)))}</pre>")
            for c in st["tables"]:
                rows = read_csv(os.path.join(root, c))
                if not rows:
                    continue
                more = len(rows) - 1 - MAX_TABLE_ROWS
                h.append(f"<p class=\"muted\"><a href=\"{e_(c)}\">{e_(c)}</a>"
                         + (f" (first {MAX_TABLE_ROWS} of {len(rows) - 1} rows)" if more > 0 else "")
                         + "</p>")
                h.append(html_table(rows[0], rows[1:1 + MAX_TABLE_ROWS], cls="data"))
            if not st["texts"] and st["log_text"].strip() and st["status"] == "ok":
                h.append(f"<pre>{e_(st['log_text'][-20000:])}</pre>")
        h.append("</section>")
    h.append("</body></html>")
    with open(os.path.join(root, "index.html.tmp"), "w") as f:
        f.write("\n".join(h) + "\n")
    os.replace(os.path.join(root, "index.html.tmp"), os.path.join(root, "index.html"))


# ---------------------------------------------------------------------------------------------
# Markdown

def md_cell(c):
    return str(c).replace("|", "\\|").replace("\n", " ")


def md_table(header, rows):
    out = ["| " + " | ".join(md_cell(h) for h in header) + " |",
           "|" + "---|" * len(header)]
    for r in rows:
        r = list(r) + [""] * (len(header) - len(r))
        out.append("| " + " | ".join(md_cell(c) for c in r[:len(header)]) + " |")
    return "\n".join(out)


def fence(text):
    return "```\n" + text.replace("```", "ʼʼʼ").rstrip("\n") + "\n```"


def write_md(root, man, exps, verdicts):
    m = [f"# Quilt reproduction of QuiltNet (DAC 2022): scale `{man['scale']}`", ""]
    m.append(f"Host `{man['host']}`, started {man['started_utc']}, {fmt_s(man['wall_s'])} this "
             f"invocation, {fmt_s(sum(x['total_wall_s'] for x in exps))} of experiment runs over "
             "all invocations, "
             f"launcher `{man['launcher']}`, {jobs_text(man)}." + (f" Interrupted by signal {man['interrupted_by_signal']}."
                                                 if man.get("interrupted_by_signal") else ""))
    if man["scale"] == "smoke":
        m += ["", "**Smoke scale**: tiny runs so the pipeline runs in minutes; its numbers and "
              "verdicts say nothing about the paper's claims."]
    m += ["", "## Verdicts", "",
          md_table(["experiment", "analysis", "verdict", "claim, paper vs Quilt"],
                   [[v["experiment"], v["step"], v["verdict"], v["line"]] for v in verdicts]
                   or [["–", "–", "–", "no verdict lines found"]]), "", "## The paper's numbers", "",
          md_table(["experiment", "paper", "the paper reports"],
                   [[x["name"], x["paper"], PAPER_HEADLINES.get(x["name"], "–")] for x in exps]),
          "", "## Experiments", ""]
    m.append(md_table(["experiment", "paper", "ranks", "runs ok", "status", "exit",
                       "wall time (all invocations)", "this invocation", "run time in file",
                       "time model", "board profile", "ran (since start)"],
                      [[x["name"], x["paper"], x["ranks"],
                        f"{(x['summary'] or {}).get('ok', 0)}/{x['runs']}", x["status"],
                        exit_text(x), fmt_s(x["total_wall_s"]), fmt_s(x["wall_s"]),
                        fmt_s((x["summary"] or {}).get("run_s")),
                        (x["summary"] or {}).get("time_model", "–"),
                        (x["summary"] or {}).get("profile", "–"), span(x)] for x in exps]))
    m += ["", "## Provenance", ""]
    rows = []
    for x in exps:
        p = (x["summary"] or {}).get("prov", {})
        rows.append([x["name"], p.get("git_commit", "–")[:12] + (" (dirty)" if p.get("git_dirty") else ""),
                     ", ".join(sorted(set(p.get("hosts", [])))), p.get("created_utc", ""),
                     p.get("scale", ""), p.get("torch_version", ""), p.get("mpi_version", ""),
                     p.get("hdf5_version", ""), p.get("xrt_version", "")])
    m.append(md_table(["experiment", "git commit", "hosts", "created (UTC)", "scale", "LibTorch",
                       "MPI", "HDF5", "XRT"], rows))
    m += ["", f"quilt reproduce ran with `--jobs {man.get('jobs', 1)}` (launcher `{man['launcher']}`)."]
    profiles = board_profiles(man, exps)
    if profiles:
        m += ["", "## Board profiles", ""]
        for n, path, text in profiles:
            m += [f"`{n}` ({path}):", "", fence(text), ""]
    for x in exps:
        s = x["summary"]
        m += ["", f"## {x['name']}: {x['paper']}", ""]
        if x["name"] in PAPER_HEADLINES:
            m += [f"The paper: {PAPER_HEADLINES[x['name']]}.", ""]
        m += [
              f"Status **{x['status']}**" + (f" ({x['reason']})" if x["reason"] else "")
              + f"; {x['ranks']} rank(s); `{x['file']}`; result `{x['result']}`; log "
              f"[{x['log']}]({x['log']}); wall time {fmt_s(x['total_wall_s'])} over all invocations "
              f"({fmt_s(x['wall_s'])} this one"
              + (f", from {x['started_utc']} to {x['ended_utc'] or '…'}" if x.get("started_utc") else "")
              + f"), {fmt_s((s or {}).get('run_s'))} of runs in the file."]
        if s:
            m += ["", f"Runs: {s['ok']} ok, {s['failed']} failed, {s['invalid']} invalid of "
                  f"{s['runs']}; time model {s['time_model']}; board profile {s['profile']}."]
            m += [f"- run failure: {r}" for r in s["reasons"]]
        if x["config_error"]:
            m += ["", f"The file does not load: {x['config_error']}"]
        if x["log_tail"]:
            m += ["", f"{x['status'].capitalize()} (exit {exit_text(x)}); the end of its log:", "",
                  fence(x["log_tail"])]
        for st in x["steps"]:
            m += ["", f"### {st['name']}", "", f"Status **{st['status']}**"
                  + (f" ({st['reason']})" if st["reason"] else "") + f"; log [{st['log']}]({st['log']})."]
            if st["log_tail"]:
                m += ["", fence(st["log_tail"])]
            for fig in st["figures"]:
                m += ["", f"![{os.path.basename(fig)}]({fig})"]
            for t in st["texts"]:
                m += ["", f"`{t}`:", "", fence(read_text(os.path.join(root, t)))]
            for c in st["tables"]:
                rows = read_csv(os.path.join(root, c))
                if rows:
                    m += ["", f"[{c}]({c}):", "", md_table(rows[0], rows[1:1 + MAX_TABLE_ROWS])]
    with open(os.path.join(root, "report.md.tmp"), "w") as f:
        f.write("\n".join(m) + "\n")
    os.replace(os.path.join(root, "report.md.tmp"), os.path.join(root, "report.md"))


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: report.py DIR (the output folder of quilt reproduce)", file=sys.stderr)
        return 2
    root = argv[1]
    if not os.path.exists(os.path.join(root, "reproduce.json")):
        print(f"report.py: {root}/reproduce.json not found: run quilt reproduce --out {root}",
              file=sys.stderr)
        return 2
    man, exps, verdicts = collect(root)
    write_html(root, man, exps, verdicts)
    write_md(root, man, exps, verdicts)
    print(f"wrote {os.path.join(root, 'index.html')} and {os.path.join(root, 'report.md')} "
          f"({len(exps)} experiments, {len(verdicts)} verdict lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
