//! `bdense report RUN... --out DIR`: B-DENSE against SFD in tables (mean and spread over
//! seeds) and pictures, as `report.md` and a self-contained `report.html`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;

use crate::cli::ReportArgs;
use crate::evaluation::EvalResult;
use crate::images;
use crate::plots::{self, Series};
use crate::run::RunRecord;

pub struct EvaluatedRun {
    pub dir: PathBuf,
    pub record: RunRecord,
    pub eval: EvalResult,
    /// (step, loss) from log.csv.
    pub losses: Vec<(f64, f64)>,
}

fn load(dir: &Path) -> anyhow::Result<EvaluatedRun> {
    let record = RunRecord::load(dir)?;
    let eval: EvalResult =
        serde_json::from_slice(&std::fs::read(dir.join("eval.json")).with_context(|| {
            format!(
                "{}: no eval.json (run `bdense eval {}` first)",
                dir.display(),
                dir.display()
            )
        })?)?;
    let log = std::fs::read_to_string(dir.join("log.csv"))
        .with_context(|| format!("reading {}/log.csv", dir.display()))?;
    let losses = log
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect();
    Ok(EvaluatedRun {
        dir: dir.to_path_buf(),
        record,
        eval,
        losses,
    })
}

/// Mean and sample standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

fn cell(v: &[f64], digits: usize) -> String {
    let (m, s) = mean_std(v);
    if v.len() > 1 {
        format!("{m:.digits$} ± {s:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// Runs grouped by (NFE, method): the report's rows.
type Groups<'a> = BTreeMap<(usize, String), Vec<&'a EvaluatedRun>>;

fn groups(runs: &[EvaluatedRun]) -> Groups<'_> {
    let mut g: Groups = BTreeMap::new();
    for r in runs {
        g.entry((r.eval.nfe, r.eval.method.clone()))
            .or_default()
            .push(r);
    }
    g
}

/// The headline table: method x NFE, teacher fidelity and FD-cls, mean ± std over seeds.
pub fn headline_table(runs: &[EvaluatedRun]) -> String {
    let mut t = String::from(
        "| NFE | method | N | K | seeds | RMSE to teacher ↓ | PSNR (dB) ↑ | FD-cls ↓ | label entropy | coverage |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut teacher_fd = Vec::new();
    for ((nfe, method), rs) in groups(runs) {
        let col =
            |f: &dyn Fn(&EvalResult) -> f64| rs.iter().map(|r| f(&r.eval)).collect::<Vec<_>>();
        teacher_fd.extend(col(&|e| e.teacher_fd_cls));
        let e = &rs[0].eval;
        let _ = writeln!(
            t,
            "| {nfe} | {method} | {} | {} | {} | {} | {} | {} | {} | {} |",
            e.n,
            e.k,
            rs.len(),
            cell(&col(&|e| e.rmse), 4),
            cell(&col(&|e| e.psnr), 2),
            cell(&col(&|e| e.fd_cls), 3),
            cell(&col(&|e| e.label_entropy), 3),
            cell(&col(&|e| e.label_coverage), 2),
        );
    }
    if !teacher_fd.is_empty() {
        let _ = writeln!(
            t,
            "| 48 | teacher | – | – | – | 0 | ∞ | {} | – | – |",
            cell(&teacher_fd[..1], 3)
        );
    }
    t
}

fn per_step_table(runs: &[EvaluatedRun]) -> String {
    let mut t = String::from(
        "| NFE | method | RMSE to the teacher at each student timestamp (sigma) |\n|---|---|---|\n",
    );
    for ((nfe, method), rs) in groups(runs) {
        let n = rs[0].eval.rmse_per_timestamp.len();
        let cells: Vec<String> = (1..n)
            .map(|i| {
                format!(
                    "{:.4} (σ={:.3})",
                    mean_std(
                        &rs.iter()
                            .map(|r| r.eval.rmse_per_timestamp[i])
                            .collect::<Vec<_>>()
                    )
                    .0,
                    rs[0].eval.sigmas[i]
                )
            })
            .collect();
        let _ = writeln!(t, "| {nfe} | {method} | {} |", cells.join(" → "));
    }
    t
}

fn per_branch_table(runs: &[EvaluatedRun]) -> String {
    let mut t = String::from(
        "| NFE | method | interval | RMSE of branch 1..K to its teacher target |\n|---|---|---|---|\n",
    );
    for ((nfe, method), rs) in groups(runs) {
        for i in 0..rs[0].eval.rmse_per_branch.len() {
            let k = rs[0].eval.rmse_per_branch[i].len();
            let cells: Vec<String> = (0..k)
                .map(|j| {
                    let v: Vec<f64> = rs
                        .iter()
                        .filter_map(|r| r.eval.rmse_per_branch[i][j])
                        .collect();
                    if v.is_empty() {
                        "AFS".into()
                    } else {
                        format!("{:.4}", mean_std(&v).0)
                    }
                })
                .collect();
            let _ = writeln!(t, "| {nfe} | {method} | {i} | {} |", cells.join(", "));
        }
    }
    t
}

/// Writes the report; returns (markdown path, html path, headline table).
pub fn write_report(
    runs: &[EvaluatedRun],
    out: &Path,
) -> anyhow::Result<(PathBuf, PathBuf, String)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let headline = headline_table(runs);
    let mut pictures: Vec<(String, String)> = Vec::new();
    let nfes: Vec<usize> = runs
        .iter()
        .map(|r| r.eval.nfe)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for &nfe in &nfes {
        let at: Vec<&EvaluatedRun> = runs.iter().filter(|r| r.eval.nfe == nfe).collect();
        // Samples from the same held-out noise: teacher, then the first seed of each method.
        let dims = at[0].record.dims;
        let d: usize = dims.iter().product();
        let read = |p: PathBuf| -> anyhow::Result<Vec<f32>> { Ok(images::read_npy(&p)?.0) };
        let mut rows = vec![read(at[0].dir.join("eval_teacher.npy"))?];
        let mut labels = vec!["teacher".to_string()];
        for method in ["sfd", "bdense"] {
            if let Some(r) = at
                .iter()
                .filter(|r| r.eval.method == method)
                .min_by_key(|r| r.eval.seed)
            {
                rows.push(read(r.dir.join("eval_student.npy"))?);
                labels.push(format!("{method} (seed {})", r.eval.seed));
            }
        }
        let per_row = rows.iter().map(|r| r.len() / d).min().unwrap_or(0).min(16);
        let rows: Vec<Vec<f32>> = rows
            .into_iter()
            .map(|r| r[..per_row * d].to_vec())
            .collect();
        let name = format!("samples-nfe{nfe}.png");
        images::write_grid(&out.join(&name), &rows, per_row, dims, 2)?;
        pictures.push((
            name,
            format!(
                "NFE {nfe}: rows {} from the same held-out noise",
                labels.join(", ")
            ),
        ));

        let series: Vec<Series> = at
            .iter()
            .map(|r| Series {
                label: format!("{} seed {}", r.eval.method, r.eval.seed),
                color: if r.eval.method == "bdense" {
                    plots::ORANGE_
                } else {
                    plots::BLUE_
                },
                points: smooth(&r.losses, 5),
                dashed: r.eval.seed > 0,
            })
            .collect();
        let name = format!("loss-nfe{nfe}.png");
        plots::line_plot(
            &out.join(&name),
            &format!("training loss, NFE {nfe}"),
            "step",
            "loss (sum over branches)",
            &series,
            true,
        )?;
        pictures.push((
            name,
            format!("NFE {nfe}: training loss per run (bdense sums K branch terms)"),
        ));
    }
    let series: Vec<Series> = groups(runs)
        .into_iter()
        .map(|((nfe, method), rs)| {
            let n = rs[0].eval.rmse_per_timestamp.len();
            let points = (1..n)
                .map(|i| {
                    (
                        rs[0].eval.sigmas[i].max(1e-3).log10(),
                        mean_std(
                            &rs.iter()
                                .map(|r| r.eval.rmse_per_timestamp[i])
                                .collect::<Vec<_>>(),
                        )
                        .0,
                    )
                })
                .collect();
            Series {
                label: format!("{method} NFE {nfe}"),
                color: if method == "bdense" {
                    plots::ORANGE_
                } else {
                    plots::BLUE_
                },
                points,
                dashed: nfe % 2 == 0,
            }
        })
        .collect();
    plots::line_plot(
        &out.join("error-per-step.png"),
        "RMSE to the teacher at each student timestamp",
        "log10 sigma (sampling runs right to left)",
        "RMSE",
        &series,
        false,
    )?;
    pictures.push((
        "error-per-step.png".into(),
        "Per-step error curves: RMSE to the teacher's state at each student timestamp".into(),
    ));

    let mut md = String::from("# bdense report: B-DENSE versus SFD\n\n");
    let _ = writeln!(
        md,
        "{} evaluated runs. Teacher fidelity is measured on held-out seeds never used in training (`{}`). FD-cls is a Fréchet distance in the feature space of the project's own small classifier (test accuracy {:.3}), not Inception FID; lower is better, compare only within this report.\n",
        runs.len(),
        runs[0].eval.heldout,
        runs[0].eval.classifier_accuracy
    );
    let _ = writeln!(
        md,
        "## Headline: method x NFE (mean ± std over seeds)\n\n{headline}"
    );
    let _ = writeln!(
        md,
        "## Error at every student timestamp\n\n{}",
        per_step_table(runs)
    );
    let _ = writeln!(
        md,
        "## B-DENSE branches: error of each branch's own step\n\n{}",
        per_branch_table(runs)
    );
    let _ = writeln!(md, "## Pictures\n");
    for (file, caption) in &pictures {
        let _ = writeln!(md, "**{caption}**\n\n![{caption}]({file})\n");
    }
    let _ = writeln!(
        md,
        "## Runs\n\n| run | method | N | K | NFE | seed | steps | batch |\n|---|---|---|---|---|---|---|---|"
    );
    for r in runs {
        let c = &r.record.config;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.dir.display(),
            c.method.method(),
            c.n,
            c.method.k(),
            r.record.layout.nfe(),
            c.seed,
            c.steps,
            c.batch
        );
    }
    let md_path = out.join("report.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let html_path = out.join("report.html");
    std::fs::write(&html_path, to_html(&md, out)?)
        .with_context(|| format!("writing {}", html_path.display()))?;
    Ok((md_path, html_path, headline))
}

/// Averages each point with its `w` neighbours on either side.
fn smooth(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let window = &points[i.saturating_sub(w)..(i + w + 1).min(points.len())];
            (
                points[i].0,
                window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64,
            )
        })
        .collect()
}

/// A minimal Markdown-to-HTML for this report's own Markdown (headings, tables, images,
/// paragraphs), with images inlined as data URIs so the file stands alone.
fn to_html(md: &str, dir: &Path) -> anyhow::Result<String> {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>bdense report</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%;image-rendering:pixelated}</style></head><body>\n",
    );
    let mut in_table = false;
    for line in md.lines() {
        let is_row = line.starts_with('|');
        if in_table && !is_row {
            html.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(html, "<h2>{}</h2>", escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(html, "<h1>{}</h1>", escape(h));
        } else if is_row {
            if line.starts_with("|---") {
                continue;
            }
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                html.push_str("<table>\n");
                in_table = true;
            }
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| format!("<{tag}>{}</{tag}>", escape(c.trim())))
                .collect();
            let _ = writeln!(html, "<tr>{}</tr>", cells.concat());
        } else if let Some(rest) = line.strip_prefix("![") {
            let (alt, file) = rest.split_once("](").unwrap_or((rest, ""));
            let file = file.trim_end_matches(')');
            let data = std::fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            let _ = writeln!(
                html,
                "<p><img alt=\"{}\" src=\"data:image/png;base64,{b64}\"></p>",
                escape(alt)
            );
        } else if !line.trim().is_empty() {
            let _ = writeln!(html, "<p>{}</p>", escape(line).replace("**", ""));
        }
    }
    if in_table {
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn load_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<EvaluatedRun>> {
    dirs.iter().map(|d| load(d)).collect()
}

pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let runs = load_runs(&args.runs)?;
    let (md, html, headline) = write_report(&runs, &args.out)?;
    println!("{headline}");
    println!(
        "report of {} runs: {} and {}",
        runs.len(),
        md.display(),
        html.display()
    );
    Ok(ExitCode::SUCCESS)
}
