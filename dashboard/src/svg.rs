/*!
The charts, drawn on the server as SVG: a run's task graph ([`dag`]), its
attempts on a timeline ([`timeline`]), and the overview's bar charts
([`bars`]). Each has a `viewBox` and no fixed size, so it scales to its
container; colours come from classes (`state-Running`, `outcome-Lost`) that
the stylesheet fills.
*/

use std::collections::{BTreeMap, HashMap};

use conveyor_coordinator::handle::AttemptView;
use maud::{html, Markup};

use crate::fmt::duration;

/// One task of the graph: its name, state, and the tasks it waits for.
#[derive(Clone, Debug)]
pub struct DagTask {
    pub name: String,
    pub state: String,
    pub after: Vec<String>,
}

/// `x@3` → `x`: the partitions of a task share a box.
pub fn base_name(task: &str) -> &str {
    task.split('@').next().unwrap_or(task)
}

const COL_W: f64 = 190.0;
const BOX_W: f64 = 150.0;
const ROW_GAP: f64 = 16.0;
const PAD: f64 = 10.0;
const CELL: f64 = 18.0;
const PER_ROW: usize = 7;

/// The task graph, left to right by depth; the partitions of a task are
/// small squares in one box, each a `g.dag-node` of its own.
pub fn dag(tasks: &[DagTask]) -> Markup {
    // Groups in first-seen (topological) order.
    let mut groups: Vec<(String, Vec<&DagTask>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        let base = base_name(&t.name).to_string();
        let i = *index.entry(base.clone()).or_insert_with(|| {
            groups.push((base, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(t);
    }
    // Depth of a group: one more than its deepest dependency.
    let mut depth = vec![0usize; groups.len()];
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for (gi, (_, members)) in groups.iter().enumerate() {
        for t in members {
            for dep in &t.after {
                if let Some(&di) = index.get(base_name(dep)) {
                    if di != gi && !edges.contains(&(di, gi)) {
                        edges.push((di, gi));
                    }
                }
            }
        }
    }
    // Groups come in topological order, so one pass in order settles depths
    // (a dependency seen later is ignored rather than looped on).
    for gi in 0..groups.len() {
        for &(from, to) in &edges {
            if to == gi && from < gi {
                depth[gi] = depth[gi].max(depth[from] + 1);
            }
        }
    }
    let height_of = |n: usize| -> f64 {
        if n <= 1 {
            40.0
        } else {
            28.0 + (n.div_ceil(PER_ROW)) as f64 * (CELL + 4.0)
        }
    };
    let columns = depth.iter().copied().max().map_or(0, |d| d + 1);
    let mut y_of = vec![0.0f64; groups.len()];
    let mut col_h = vec![PAD; columns.max(1)];
    for (gi, (_, members)) in groups.iter().enumerate() {
        let c = depth[gi];
        y_of[gi] = col_h[c];
        col_h[c] += height_of(members.len()) + ROW_GAP;
    }
    let width = PAD * 2.0 + columns.max(1) as f64 * COL_W - (COL_W - BOX_W);
    let height = col_h.iter().copied().fold(PAD, f64::max).max(60.0);
    let x_of = |gi: usize| PAD + depth[gi] as f64 * COL_W;
    html! {
        svg #dag viewBox=(format!("0 0 {width:.0} {height:.0}")) width=(format!("{width:.0}")) height=(format!("{height:.0}")) role="img"
            aria-label="Task graph, coloured by state" preserveAspectRatio="xMinYMin meet" {
            @for &(from, to) in &edges {
                @let (x1, y1) = (x_of(from) + BOX_W, y_of[from] + 20.0);
                @let (x2, y2) = (x_of(to), y_of[to] + 20.0);
                path.dag-edge d=(format!("M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}", x1 + 20.0, x2 - 20.0)) {}
            }
            @for (gi, (base, members)) in groups.iter().enumerate() {
                @let (x, y) = (x_of(gi), y_of[gi]);
                @if members.len() == 1 && members[0].name == *base {
                    @let t = members[0];
                    g.dag-node data-task=(t.name) data-state=(t.state) {
                        title { (t.name) ": " (t.state) }
                        rect class=(format!("state-{}", t.state)) x=(x) y=(y) width=(BOX_W) height="40" rx="6" {}
                        text x=(x + 10.0) y=(y + 17.0) { (clip(&t.name, 18)) }
                        text.sub x=(x + 10.0) y=(y + 32.0) { (t.state) }
                    }
                } @else {
                    g.dag-group data-group=(base) {
                        rect.group x=(x) y=(y) width=(BOX_W) height=(height_of(members.len())) rx="6" {}
                        text x=(x + 10.0) y=(y + 17.0) { (clip(base, 12)) " ×" (members.len()) }
                        @for (i, t) in members.iter().enumerate() {
                            @let cx = x + 8.0 + (i % PER_ROW) as f64 * (CELL + 2.0);
                            @let cy = y + 26.0 + (i / PER_ROW) as f64 * (CELL + 4.0);
                            g.dag-node data-task=(t.name) data-state=(t.state) {
                                title { (t.name) ": " (t.state) }
                                rect class=(format!("state-{}", t.state)) x=(cx) y=(cy) width=(CELL) height=(CELL) rx="3" {}
                            }
                        }
                    }
                }
            }
        }
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

const GUTTER: f64 = 170.0;
const TL_W: f64 = 1000.0;
const LANE: f64 = 26.0;

/// Where an attempt's bar ends: when it ended (a lost attempt's end is its
/// last sign of life), or now while it runs.
pub fn attempt_end(a: &AttemptView, now_ms: u64) -> Option<u64> {
    let start = a.started_ms?;
    Some(a.ended_ms.unwrap_or(now_ms).max(start))
}

/// Every attempt of every task on a time axis: one lane per task (in
/// `tasks` order, then any other task seen), one `rect.attempt` per attempt,
/// from its start to [`attempt_end`]. A retry is a second bar in its lane.
pub fn timeline(tasks: &[String], attempts: &[AttemptView], now_ms: u64) -> Markup {
    let mut lanes: Vec<&str> = tasks.iter().map(String::as_str).collect();
    for a in attempts {
        if !lanes.contains(&a.task.as_str()) {
            lanes.push(&a.task);
        }
    }
    let lane_of: BTreeMap<&str, usize> = lanes.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let spans: Vec<(u64, u64)> = attempts
        .iter()
        .filter_map(|a| Some((a.started_ms?, attempt_end(a, now_ms)?)))
        .collect();
    let t0 = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let t1 = spans.iter().map(|s| s.1).max().unwrap_or(t0).max(t0 + 1);
    let scale = (TL_W - GUTTER - 10.0) / (t1 - t0) as f64;
    let x = |ms: u64| GUTTER + (ms.saturating_sub(t0)) as f64 * scale;
    let height = 30.0 + lanes.len().max(1) as f64 * LANE;
    html! {
        svg #timeline viewBox=(format!("0 0 {TL_W:.0} {height:.0}")) role="img"
            aria-label="Timeline of every attempt, by task" preserveAspectRatio="xMinYMin meet" {
            @for i in 0..=4u64 {
                @let ms = t0 + (t1 - t0) * i / 4;
                // A short run's ticks would repeat one label on top of another.
                @if i == 0 || duration(ms - t0) != duration(t0 + (t1 - t0) * (i - 1) / 4 - t0) {
                line.tick x1=(format!("{:.1}", x(ms))) x2=(format!("{:.1}", x(ms))) y1="18" y2=(height) {}
                text.axis x=(format!("{:.1}", x(ms))) y="12" text-anchor=(if i == 4 { "end" } else if i == 0 { "start" } else { "middle" }) {
                    "+" (duration(ms - t0))
                }
                }
            }
            @for (i, task) in lanes.iter().enumerate() {
                text.lane x="4" y=(30.0 + i as f64 * LANE + 13.0) { (clip(task, 22)) }
            }
            @for a in attempts {
                @if let (Some(start), Some(end)) = (a.started_ms, attempt_end(a, now_ms)) {
                    @let lane = lane_of.get(a.task.as_str()).copied().unwrap_or(0);
                    @let node = a.node.as_deref().unwrap_or("?");
                    rect class=(format!("attempt outcome-{}", a.outcome))
                        data-task=(a.task) data-attempt=(a.attempt) data-node=(node)
                        data-outcome=(a.outcome) data-start=(start) data-end=(end)
                        x=(format!("{:.2}", x(start))) y=(format!("{:.1}", 24.0 + lane as f64 * LANE))
                        width=(format!("{:.2}", (x(end) - x(start)).max(2.0))) height="18" rx="3" {
                        title { (a.task) " attempt " (a.attempt) " on " (node) ": " (a.outcome) ", " (duration(end - start)) }
                    }
                }
            }
        }
    }
}

/// One bar of a chart: its label, its values (stacked, each with a class),
/// and its tooltip.
pub struct Bar {
    pub label: String,
    pub parts: Vec<(f64, &'static str)>,
    pub title: String,
}

/// A small vertical bar chart of `bars` (stacked parts), scaled to the
/// tallest; `id` names the `svg`.
pub fn bars(id: &str, label: &str, bars: &[Bar]) -> Markup {
    let (w, h, base) = (480.0, 140.0, 118.0);
    let max = bars
        .iter()
        .map(|b| b.parts.iter().map(|p| p.0).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9);
    let step = (w - 20.0) / bars.len().max(1) as f64;
    html! {
        svg id=(id) viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(label) preserveAspectRatio="xMinYMin meet" {
            line.tick x1="10" x2=(w - 10.0) y1=(base) y2=(base) {}
            @for (i, b) in bars.iter().enumerate() {
                @let x = 10.0 + i as f64 * step;
                g.bar {
                    title { (b.title) }
                    @for (y, bh, class) in stack(&b.parts, base, (base - 10.0) / max) {
                        rect class=(class) x=(format!("{:.1}", x + 1.0)) y=(format!("{y:.1}")) width=(format!("{:.1}", (step - 2.0).max(1.0))) height=(format!("{bh:.1}")) {}
                    }
                    @if !b.label.is_empty() {
                        text.axis x=(format!("{:.1}", x + step / 2.0)) y=(h - 6.0) text-anchor="middle" { (b.label) }
                    }
                }
            }
            text.axis x=(w - 10.0) y="10" text-anchor="end" { "max " (fmt_num(max)) }
        }
    }
}

/// Horizontal bars, one row per label with two values (p50, p95), scaled to
/// the largest.
pub fn hbars(id: &str, label: &str, rows: &[(String, u64, u64)]) -> Markup {
    let (w, row) = (480.0, 24.0);
    let h = 20.0 + rows.len().max(1) as f64 * row;
    let max = rows.iter().map(|r| r.2.max(r.1)).max().unwrap_or(1).max(1) as f64;
    let (left, right) = (130.0, w - 80.0);
    let xw = |v: u64| (v as f64 / max * (right - left)).max(1.0);
    html! {
        svg id=(id) viewBox=(format!("0 0 {w} {h:.0}")) role="img" aria-label=(label) preserveAspectRatio="xMinYMin meet" {
            @for (i, (flow, p50, p95)) in rows.iter().enumerate() {
                @let y = 10.0 + i as f64 * row;
                g.hbar data-flow=(flow) {
                    title { (flow) ": p50 " (duration(*p50)) ", p95 " (duration(*p95)) }
                    text.lane x="4" y=(y + 14.0) { (clip(flow, 18)) }
                    rect.p95 x=(left) y=(y + 2.0) width=(format!("{:.1}", xw(*p95))) height="16" {}
                    rect.p50 x=(left) y=(y + 6.0) width=(format!("{:.1}", xw(*p50))) height="8" {}
                    text.axis x=(left + xw(*p95) + 4.0) y=(y + 14.0) { (duration(*p95)) }
                }
            }
        }
    }
}

/// The stacked parts of a bar from `base` up: (top y, height, class).
fn stack(parts: &[(f64, &'static str)], base: f64, per_unit: f64) -> Vec<(f64, f64, &'static str)> {
    let mut top = base;
    parts
        .iter()
        .map(|(v, class)| {
            let h = v * per_unit;
            top -= h;
            (top, h, *class)
        })
        .collect()
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(
        task: &str,
        n: u32,
        node: &str,
        start: u64,
        end: Option<u64>,
        outcome: &str,
    ) -> AttemptView {
        AttemptView {
            task: task.into(),
            attempt: n,
            delivery: 1,
            node: Some(node.into()),
            started_ms: Some(start),
            ended_ms: end,
            outcome: outcome.into(),
            rows_in: None,
            rows_out: None,
            bytes_in: None,
            bytes_out: None,
            error: None,
        }
    }

    /// The `rect.attempt` elements of an SVG, as (data-task, data-attempt,
    /// x, width).
    fn rects(svg: &str) -> Vec<(String, String, f64, f64)> {
        let attr = |el: &str, name: &str| -> String {
            let key = format!(" {name}=\"");
            let i = el.find(&key).unwrap_or_else(|| panic!("{name} in {el}")) + key.len();
            el[i..i + el[i..].find('"').unwrap()].to_string()
        };
        svg.split("<rect")
            .skip(1)
            .filter(|el| el.starts_with(" class=\"attempt"))
            .map(|el| {
                let el = &el[..el.find('>').unwrap()];
                (
                    attr(el, "data-task"),
                    attr(el, "data-attempt"),
                    attr(el, "x").parse().unwrap(),
                    attr(el, "width").parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_retry_is_a_second_bar_in_the_same_lane() {
        let tasks = vec!["e".to_string(), "l".to_string()];
        let attempts = [
            attempt("e", 1, "w1", 1_000, Some(2_000), "Failed"),
            attempt("e", 2, "w2", 3_000, Some(5_000), "Succeeded"),
            attempt("l", 1, "w1", 5_000, Some(9_000), "Succeeded"),
        ];
        let svg = timeline(&tasks, &attempts, 10_000).into_string();
        let r = rects(&svg);
        assert_eq!(r.len(), 3, "{svg}");
        assert_eq!((r[0].0.as_str(), r[0].1.as_str()), ("e", "1"));
        assert_eq!((r[1].0.as_str(), r[1].1.as_str()), ("e", "2"));
        // Both attempts of `e` in one lane (same y), the second after the first.
        let ys: Vec<&str> = svg
            .split("<rect class=\"attempt")
            .skip(1)
            .map(|el| {
                let i = el.find(" y=\"").unwrap() + 4;
                &el[i..i + el[i..].find('"').unwrap()]
            })
            .collect();
        assert_eq!(ys[0], ys[1]);
        assert_ne!(ys[0], ys[2]);
        assert!(r[1].2 >= r[0].2 + r[0].3, "{r:?}");
        assert!(svg.contains("data-node=\"w2\""));
        assert!(svg.contains("class=\"attempt outcome-Failed\""));
    }

    #[test]
    fn a_killed_attempt_ends_where_it_died_and_a_running_one_at_now() {
        let tasks = vec!["t".to_string()];
        let attempts = [
            // Lost at 4 s (its last heartbeat), retried on another node.
            attempt("t", 1, "w1", 0, Some(4_000), "Lost"),
            attempt("t", 2, "w2", 5_000, None, "Running"),
        ];
        let svg = timeline(&tasks, &attempts, 9_000).into_string();
        let r = rects(&svg);
        assert_eq!(r.len(), 2);
        let scale = (TL_W - GUTTER - 10.0) / 9_000.0;
        let end_lost = r[0].2 + r[0].3;
        assert!(
            (end_lost - (GUTTER + 4_000.0 * scale)).abs() < 0.05,
            "{r:?}"
        );
        let end_running = r[1].2 + r[1].3;
        assert!(
            (end_running - (GUTTER + 9_000.0 * scale)).abs() < 0.05,
            "{r:?}"
        );
        assert!(svg.contains("data-end=\"4000\""));
        assert!(svg.contains("outcome-Lost"));
    }

    #[test]
    fn hostile_task_names_and_errors_are_escaped() {
        let tasks = vec!["<script>".to_string()];
        let svg = timeline(
            &tasks,
            &[attempt("<script>", 1, "\"w", 0, Some(1), "Failed")],
            1,
        )
        .into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("data-node=\"&quot;w\""));
    }

    #[test]
    fn the_graph_groups_partitions_and_draws_one_edge_per_pair_of_boxes() {
        let t = |name: &str, after: &[&str]| DagTask {
            name: name.into(),
            state: "Succeeded".into(),
            after: after.iter().map(|s| s.to_string()).collect(),
        };
        let tasks = [
            t("e@0", &[]),
            t("e@1", &[]),
            t("e@2", &[]),
            t("l", &["e@0", "e@1", "e@2"]),
        ];
        let svg = dag(&tasks).into_string();
        assert_eq!(svg.matches("class=\"dag-node\"").count(), 4, "{svg}");
        assert_eq!(svg.matches("class=\"dag-group\"").count(), 1);
        assert!(svg.contains("data-task=\"e@1\""));
        assert!(svg.contains("e ×3"));
        assert_eq!(svg.matches("class=\"dag-edge\"").count(), 1);
        assert!(svg.starts_with("<svg id=\"dag\" viewBox="), "{svg}");
    }
}
