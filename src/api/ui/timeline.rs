//! The run page's timeline as SVG: one bar per step on a shared axis (x and
//! width in user units proportional to start and duration), nested by path
//! (a group's children under it, indented), coloured by status (CSS on
//! `data-status`), failed attempts drawn as segments over their step's bar,
//! and a `<title>` with name, times, attempts and error on every focusable
//! bar.
//!
//! A run of more than [`FULL_LIMIT`] steps is drawn aggregated: each group
//! keeps its bar, and its steps become one row of per-column marks (how
//! many of them ran in that column, coloured by the worst status among
//! them), so the page stays a few hundred KB whatever the run's size; the
//! steps table pages through the steps themselves.

use std::collections::HashMap;
use std::fmt::Write as _;

use maud::{Markup, PreEscaped, html};

use crate::exec::StepReport;
use crate::store::RecordedStatus;

/// The most steps drawn one bar each.
pub const FULL_LIMIT: usize = 1000;
/// The most group bars drawn in an aggregated timeline.
const GROUP_LIMIT: usize = 1000;
/// The SVG's width in user units (and in CSS px: the page scrolls it).
pub const WIDTH: f64 = 1000.0;
/// Where the axis starts (the labels are left of it).
pub const LEFT: f64 = 230.0;
/// The axis' length.
pub const AXIS: f64 = WIDTH - LEFT - 10.0;
const ROW: f64 = 18.0;
const TOP: f64 = 22.0;
/// Columns of an aggregated row.
const COLUMNS: usize = 380;

/// The SVG of `steps`, on an axis of `total_ms`; a running step's bar ends at
/// `now_ms`.
pub fn svg(steps: &[StepReport], total_ms: u64, now_ms: u64) -> Markup {
    let total = total_ms.max(1) as f64;
    let order = tree_order(steps);
    let aggregated = steps.len() > FULL_LIMIT;
    let mut body = String::new();
    let mut y = TOP;
    let mut drawn = 0usize;
    if aggregated {
        // Group bars, then each group's steps as one row of marks.
        let mut children: HashMap<&str, Vec<&StepReport>> = HashMap::new();
        for s in steps.iter().filter(|s| !s.is_group()) {
            children.entry(parent(&s.path)).or_default().push(s);
        }
        let mut groups = 0usize;
        for &i in &order {
            let s = &steps[i];
            if !s.is_group() {
                continue;
            }
            groups += 1;
            if groups > GROUP_LIMIT {
                continue;
            }
            bar(&mut body, s, y, total, now_ms);
            y += ROW;
            if let Some(leaves) = children.get(&*s.path) {
                aggregate(&mut body, &s.path, leaves, y, total, now_ms, depth(&s.path) + 1);
                y += ROW;
                drawn += leaves.len();
            }
        }
        if let Some(leaves) = children.get("") {
            aggregate(&mut body, "", leaves, y, total, now_ms, 0);
            y += ROW;
            drawn += leaves.len();
        }
        let _ = drawn;
    } else {
        for &i in &order {
            bar(&mut body, &steps[i], y, total, now_ms);
            y += ROW;
        }
    }
    let height = y + 6.0;
    let mut axis = String::new();
    for k in 0..=4u64 {
        let ms = total_ms * k / 4;
        let x = LEFT + AXIS * k as f64 / 4.0;
        let _ = write!(
            axis,
            r#"<line class="tick" x1="{x:.2}" x2="{x:.2}" y1="{}" y2="{height:.0}"></line><text class="tick" x="{x:.2}" y="14" text-anchor="{}">{}</text>"#,
            TOP - 4.0,
            if k == 0 {
                "start"
            } else if k == 4 {
                "end"
            } else {
                "middle"
            },
            super::duration(ms)
        );
    }
    html! {
        svg #timeline xmlns="http://www.w3.org/2000/svg" role="group" aria-label="Timeline of the run's steps"
            width=(WIDTH) height=(format!("{height:.0}")) viewBox=(format!("0 0 {WIDTH} {height:.0}"))
            data-left=(LEFT) data-axis=(AXIS) data-total=(total_ms) data-row=(ROW) data-aggregated=(aggregated) {
            g.axis { (PreEscaped(axis)) }
            g.rows { (PreEscaped(body)) }
        }
    }
}

/// One step's row: its label and its bar (with its failed attempts).
fn bar(out: &mut String, s: &StepReport, y: f64, total: f64, now_ms: u64) {
    let depth = depth(&s.path);
    let start = s.start_ms.unwrap_or(0);
    let end = s.end_ms.unwrap_or(if s.status == RecordedStatus::Running { now_ms } else { start }).max(start);
    let scale = AXIS / total;
    let x = LEFT + start as f64 * scale;
    let width = (end - start) as f64 * scale;
    let kind = if s.is_group() { "group" } else { "step" };
    // The title holds the step's error (stderr's tail: outside text).
    let title = escape(&title(s, start, end));
    let label_x = 4.0 + 12.0 * depth.min(12) as f64;
    let _ = write!(
        out,
        r#"<g class="row" data-path="{path}" data-depth="{depth}" transform="translate(0 {y:.0})"><text class="label{group}" x="{label_x:.0}" y="12">{name}</text><rect class="bar" data-path="{path}" data-kind="{kind}" data-status="{status}" data-start="{start}" {end_attr} x="{x:.3}" y="2" width="{width:.3}" height="12" tabindex="0" role="img" aria-label="{title}"><title>{title}</title></rect>"#,
        path = escape(&s.path),
        group = if s.is_group() { " group" } else { "" },
        name = escape(&s.name),
        status = s.status.as_str(),
        end_attr = match s.end_ms {
            Some(e) => format!(r#"data-end="{e}""#),
            None => String::new(),
        },
    );
    let mut from = start;
    for a in &s.retried {
        let at = a.at_ms.max(from);
        let _ = write!(
            out,
            r#"<rect class="attempt" data-attempt="{n}" x="{x:.3}" y="2" width="{w:.3}" height="12"><title>attempt {n} failed: {e}</title></rect>"#,
            n = a.attempt,
            x = LEFT + from as f64 * scale,
            w = (at - from) as f64 * scale,
            e = escape(&a.error),
        );
        from = at;
    }
    out.push_str("</g>");
}

/// A group's steps as one row of per-column marks.
fn aggregate(out: &mut String, group: &str, leaves: &[&StepReport], y: f64, total: f64, now_ms: u64, depth: usize) {
    let mut counts = vec![0u32; COLUMNS];
    let mut worst = vec![0u8; COLUMNS];
    let per_column = total / COLUMNS as f64;
    for s in leaves {
        let Some(start) = s.start_ms else { continue };
        let end = s.end_ms.unwrap_or(now_ms).max(start);
        let first = ((start as f64 / per_column) as usize).min(COLUMNS - 1);
        let last = ((end as f64 / per_column) as usize).min(COLUMNS - 1);
        let rank = severity(s.status);
        for c in first..=last {
            counts[c] += 1;
            worst[c] = worst[c].max(rank);
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let width = AXIS / COLUMNS as f64;
    let label_x = 4.0 + 12.0 * depth.min(12) as f64;
    let _ = write!(
        out,
        r#"<g class="row agg" data-path="{path}/*" data-depth="{depth}" transform="translate(0 {y:.0})"><text class="label" x="{label_x:.0}" y="12">{n} steps</text>"#,
        path = escape(group),
        n = leaves.len(),
    );
    for c in 0..COLUMNS {
        if counts[c] == 0 {
            continue;
        }
        let opacity = 0.25 + 0.75 * f64::from(counts[c]) / f64::from(max);
        let _ = write!(
            out,
            r#"<rect class="agg" data-status="{s}" x="{x:.2}" y="2" width="{width:.2}" height="12" fill-opacity="{opacity:.2}"><title>{count} steps</title></rect>"#,
            s = SEVERITY[usize::from(worst[c])],
            x = LEFT + c as f64 * width,
            count = counts[c],
        );
    }
    out.push_str("</g>");
}

/// Statuses from best to worst, for an aggregated column's colour.
const SEVERITY: [&str; 7] = ["skipped", "succeeded", "running", "cancelled", "interrupted", "timed_out", "failed"];

fn severity(status: RecordedStatus) -> u8 {
    SEVERITY.iter().position(|w| *w == status.as_str()).map_or(2, |i| i as u8)
}

fn title(s: &StepReport, start: u64, end: u64) -> String {
    let mut t = format!(
        "{} ({}) — {}: {} → {} ({})",
        s.path,
        s.kind,
        s.status,
        super::duration(start),
        super::duration(end),
        super::duration(end - start)
    );
    if s.attempts > 1 {
        let _ = write!(t, "; {} attempts", s.attempts);
    }
    if let Some(e) = &s.error {
        let _ = write!(t, "; error: {}", super::runs::first_line(e));
    }
    t
}

/// The parent's path of `path` (`""` at the top).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn depth(path: &str) -> usize {
    path.matches('/').count()
}

/// The steps' indices in tree order: each node, then its children in the
/// order they were first seen.
pub fn tree_order(steps: &[StepReport]) -> Vec<usize> {
    let known: std::collections::HashSet<&str> = steps.iter().map(|s| &*s.path).collect();
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let p = parent(&s.path);
        if known.contains(p) && p != &*s.path {
            children.entry(p).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    let mut order = Vec::with_capacity(steps.len());
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        if let Some(kids) = children.get(&*steps[i].path) {
            stack.extend(kids.iter().rev());
        }
    }
    order
}

/// Escapes text for an SVG attribute (double-quoted) or element: maud's
/// own escaping, as the pages' (`&`, `<`, `>`, `"`).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    super::escape_into(&mut out, text);
    out
}
