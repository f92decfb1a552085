//! What the tools show: top tables with the Pareto cut, flame-graph trees
//! under a node budget, diffs, and filtering (totals by label are in
//! `groups`).
//!
//! Everything here reads one sample type of a [`Profile`] and works on
//! function *names* (a function compiled twice is one row), frames expanded
//! through inlining.

use hashbrown::HashMap;
use regex::Regex;
use serde::Serialize;

use crate::error::Error;
use crate::ids::{LocationId, StackId};
use crate::intern::StringTable;
use crate::merge::compact;
use crate::model::{Profile, Sample};

/// The share of self value the Pareto cut covers.
pub const PARETO_SHARE: f64 = 0.8;

/// Frame names of every location, interned once, so per-stack work is
/// integer work.
struct Frames {
    names: StringTable,
    /// Per location, its frame-name ids leaf first (inlined callee first).
    of_location: Vec<Vec<u32>>,
}

impl Frames {
    fn new(p: &Profile) -> Self {
        let mut names = StringTable::default();
        let of_location = (0..p.locations.len())
            .map(|i| {
                let mut ids = Vec::with_capacity(1);
                p.frame_names(LocationId::from_index(i), |f| {
                    ids.push(names.intern(&f.to_string()).0);
                });
                ids
            })
            .collect();
        Frames { names, of_location }
    }

    /// Frame-name ids of `stack`, leaf first.
    fn stack_into(&self, p: &Profile, stack: StackId, out: &mut Vec<u32>) {
        out.clear();
        for &l in p.stack(stack) {
            out.extend_from_slice(&self.of_location[l.index()]);
        }
    }
}

/// Sum of sample type `ty` per stack, indexed by `StackId`.
fn per_stack(p: &Profile, ty: usize) -> Vec<i64> {
    let n = p.sample_types.len();
    let mut sums = vec![0i64; p.stacks.len()];
    for (i, s) in p.samples.iter().enumerate() {
        let v = p.values[i * n + ty];
        let slot = &mut sums[s.stack.index()];
        *slot = slot.saturating_add(v);
    }
    sums
}

pub(crate) fn check_type(p: &Profile, ty: usize) -> Result<(), Error> {
    if ty < p.sample_types.len() {
        Ok(())
    } else {
        Err(Error::NoSuchType {
            wanted: format!("#{ty}"),
            available: type_list(p),
        })
    }
}

/// The profile's sample types as `type/unit`, comma separated.
pub fn type_list(p: &Profile) -> String {
    (0..p.sample_types.len())
        .map(|i| {
            let (t, u) = p.sample_type_names(i);
            format!("{t}/{u}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One function's row in a top table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopRow {
    /// Function name.
    pub name: String,
    /// Value of samples whose leaf frame is this function.
    #[serde(rename = "self")]
    pub self_value: i64,
    /// Value of samples with this function anywhere on the stack
    /// (recursion counted once).
    pub total: i64,
    /// In the smallest set of functions that makes [`PARETO_SHARE`] of self.
    pub pareto: bool,
}

/// A top table: functions by self value, descending.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Top {
    /// Sample type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its unit.
    pub unit: String,
    /// Sum over all samples.
    pub total: i64,
    /// Rows, sorted by self descending, then name.
    pub rows: Vec<TopRow>,
}

/// The top table of sample type `ty`.
pub fn top(p: &Profile, ty: usize) -> Result<Top, Error> {
    check_type(p, ty)?;
    let frames = Frames::new(p);
    let sums = per_stack(p, ty);
    let nf = frames.names.len();
    let mut self_v = vec![0i64; nf];
    let mut total_v = vec![0i64; nf];
    // `seen[f] == stamp` marks f as counted for the current stack.
    let mut seen = vec![u32::MAX; nf];
    let mut buf = Vec::new();
    let mut total = 0i64;
    for (s, &v) in sums.iter().enumerate() {
        if v == 0 {
            continue;
        }
        total = total.saturating_add(v);
        frames.stack_into(p, StackId::from_index(s), &mut buf);
        if let Some(&leaf) = buf.first() {
            self_v[leaf as usize] += v;
        }
        for &f in &buf {
            if seen[f as usize] != s as u32 {
                seen[f as usize] = s as u32;
                total_v[f as usize] += v;
            }
        }
    }
    let mut rows: Vec<TopRow> = (0..nf)
        .filter(|&f| total_v[f] != 0 || self_v[f] != 0)
        .map(|f| TopRow {
            name: frames.names.get(crate::ids::StringId(f as u32)).to_string(),
            self_value: self_v[f],
            total: total_v[f],
            pareto: false,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.self_value
            .cmp(&a.self_value)
            .then(b.total.cmp(&a.total))
            .then(a.name.cmp(&b.name))
    });
    mark_pareto(&mut rows, total);
    let (t, u) = p.sample_type_names(ty);
    Ok(Top {
        ty: t.into(),
        unit: u.into(),
        total,
        rows,
    })
}

fn mark_pareto(rows: &mut [TopRow], total: i64) {
    let goal = (total as f64 * PARETO_SHARE).ceil() as i64;
    let mut acc = 0i64;
    for row in rows.iter_mut() {
        if acc >= goal || row.self_value <= 0 {
            break;
        }
        acc += row.self_value;
        row.pareto = true;
    }
}

/// A node of a flame-graph tree.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlameNode {
    /// Frame name; `total` for the root, `other` for folded siblings.
    pub name: String,
    /// Value of samples ending here.
    #[serde(rename = "self")]
    pub self_value: i64,
    /// Value of samples through here.
    pub total: i64,
    /// Children, by descending total.
    pub children: Vec<u32>,
    /// Samples through here, when counted ([`FlameTree::add_samples`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<i64>,
}

/// A flame-graph tree, root at index 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlameTree {
    /// Sample type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its unit.
    pub unit: String,
    /// Nodes; `nodes[0]` is the root.
    pub nodes: Vec<FlameNode>,
}

/// Name of the node that stands for the children cut by the budget.
pub const OTHER: &str = "other";

/// The flame-graph tree of sample type `ty`, keeping the `max_nodes` nodes
/// with the largest totals (0: no limit); the rest of each parent's children
/// fold into one [`OTHER`] child.
pub fn flame_tree(p: &Profile, ty: usize, max_nodes: usize) -> Result<FlameTree, Error> {
    check_type(p, ty)?;
    let frames = Frames::new(p);
    let sums = per_stack(p, ty);
    // Full tree over name ids: (parent, name) -> node.
    let mut name_of: Vec<u32> = vec![u32::MAX];
    let mut parent_of: Vec<u32> = vec![u32::MAX];
    let mut self_v: Vec<i64> = vec![0];
    let mut total_v: Vec<i64> = vec![0];
    let mut child: HashMap<(u32, u32), u32> = HashMap::new();
    let mut buf = Vec::new();
    for (s, &v) in sums.iter().enumerate() {
        if v == 0 {
            continue;
        }
        frames.stack_into(p, StackId::from_index(s), &mut buf);
        let mut node = 0u32;
        total_v[0] += v;
        for &f in buf.iter().rev() {
            node = *child.entry((node, f)).or_insert_with(|| {
                name_of.push(f);
                parent_of.push(node);
                self_v.push(0);
                total_v.push(0);
                (name_of.len() - 1) as u32
            });
            total_v[node as usize] += v;
        }
        self_v[node as usize] += v;
    }
    let n = name_of.len();
    let mut keep = vec![true; n];
    if max_nodes > 0 && n > max_nodes {
        let mut order: Vec<u32> = (0..n as u32).collect();
        // A parent's total is at least its child's and its index smaller, so
        // every prefix of this order is closed under "parent of".
        order.sort_by(|&a, &b| {
            total_v[b as usize]
                .cmp(&total_v[a as usize])
                .then(a.cmp(&b))
        });
        keep.iter_mut().for_each(|k| *k = false);
        for &i in order.iter().take(max_nodes.max(1)) {
            keep[i as usize] = true;
        }
    }
    // Emit kept nodes, then an `other` child per parent with dropped children.
    let mut out_index = vec![u32::MAX; n];
    let mut nodes: Vec<FlameNode> = Vec::new();
    let mut other_of: HashMap<u32, u32> = HashMap::new();
    for i in 0..n {
        if keep[i] {
            let name = if i == 0 {
                "total".to_string()
            } else {
                frames
                    .names
                    .get(crate::ids::StringId(name_of[i]))
                    .to_string()
            };
            out_index[i] = nodes.len() as u32;
            nodes.push(FlameNode {
                name,
                self_value: self_v[i],
                total: total_v[i],
                children: Vec::new(),
                samples: None,
            });
            if i != 0 {
                let parent = out_index[parent_of[i] as usize];
                nodes[parent as usize].children.push(out_index[i]);
            }
        } else if keep[parent_of[i] as usize] {
            let parent = out_index[parent_of[i] as usize];
            let o = *other_of.entry(parent).or_insert_with(|| {
                nodes.push(FlameNode {
                    name: OTHER.into(),
                    self_value: 0,
                    total: 0,
                    children: Vec::new(),
                    samples: None,
                });
                let o = (nodes.len() - 1) as u32;
                nodes[parent as usize].children.push(o);
                o
            });
            nodes[o as usize].total += total_v[i];
            nodes[o as usize].self_value += total_v[i];
        }
    }
    let totals: Vec<i64> = nodes.iter().map(|n| n.total).collect();
    for node in &mut nodes {
        node.children
            .sort_by(|&a, &b| totals[b as usize].cmp(&totals[a as usize]).then(a.cmp(&b)));
    }
    let (t, u) = p.sample_type_names(ty);
    Ok(FlameTree {
        ty: t.into(),
        unit: u.into(),
        nodes,
    })
}

impl FlameTree {
    /// Counts into every node the samples through it: `p` is the same
    /// selection as the tree's (any sample type), `ty` its column holding
    /// sample counts. A stack that leaves the tree where the node budget
    /// cut it counts in that parent's [`OTHER`] node, as its value did.
    pub fn add_samples(&mut self, p: &Profile, ty: usize) -> Result<(), Error> {
        check_type(p, ty)?;
        let frames = Frames::new(p);
        let sums = per_stack(p, ty);
        let mut child: HashMap<(u32, &str), u32> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for &c in &n.children {
                child.insert((i as u32, self.nodes[c as usize].name.as_str()), c);
            }
        }
        let mut samples = vec![0i64; self.nodes.len()];
        let mut buf = Vec::new();
        for (s, &c) in sums.iter().enumerate() {
            if c == 0 {
                continue;
            }
            frames.stack_into(p, StackId::from_index(s), &mut buf);
            let mut node = 0u32;
            samples[0] += c;
            for &f in buf.iter().rev() {
                let name = frames.names.get(crate::ids::StringId(f));
                match child.get(&(node, name)) {
                    Some(&next) => {
                        node = next;
                        samples[node as usize] += c;
                    }
                    None => {
                        if let Some(&o) = child.get(&(node, OTHER)) {
                            samples[o as usize] += c;
                        }
                        break;
                    }
                }
            }
        }
        drop(child);
        for (n, c) in self.nodes.iter_mut().zip(samples) {
            n.samples = Some(c);
        }
        Ok(())
    }

    /// The tree as folded lines (`root;…;leaf self`), the input of
    /// `inferno`'s flame-graph writer.
    pub fn folded(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut path: Vec<&str> = Vec::new();
        self.walk(0, &mut path, &mut out);
        out
    }

    fn walk<'a>(&'a self, node: u32, path: &mut Vec<&'a str>, out: &mut Vec<String>) {
        let n = &self.nodes[node as usize];
        if node != 0 {
            path.push(&n.name);
        }
        if n.self_value > 0 && !path.is_empty() {
            out.push(format!("{} {}", path.join(";"), n.self_value));
        }
        for &c in &n.children {
            self.walk(c, path, out);
        }
        if node != 0 {
            path.pop();
        }
    }
}

/// A function's change between two profiles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffRow {
    /// Function name.
    pub name: String,
    /// Self value in the base.
    pub base_self: i64,
    /// Self value in the new profile.
    pub new_self: i64,
    /// Total value in the base.
    pub base_total: i64,
    /// Total value in the new profile.
    pub new_total: i64,
    /// Change of the self share, in percentage points of each profile's total.
    pub self_delta_pct: f64,
    /// Change of the total share, in percentage points.
    pub total_delta_pct: f64,
}

/// A stack's change between two profiles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StackDiff {
    /// Folded stack, root first.
    pub stack: String,
    /// Value in the base.
    pub base: i64,
    /// Value in the new profile.
    pub new: i64,
    /// Change of share, in percentage points.
    pub delta_pct: f64,
}

/// What grew and shrank, normalised by each side's total.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    /// Sample type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its unit.
    pub unit: String,
    /// Base total.
    pub base_total: i64,
    /// New total.
    pub new_total: i64,
    /// Functions, largest change of self share first (for a gauge, of
    /// self value: what grew most in bytes).
    pub functions: Vec<DiffRow>,
    /// Stacks, largest absolute change first.
    pub stacks: Vec<StackDiff>,
}

fn share(v: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * v as f64 / total as f64
    }
}

/// Compares sample type `base_ty` of `base` with `new_ty` of `new`.
pub fn diff(base: &Profile, base_ty: usize, new: &Profile, new_ty: usize) -> Result<Diff, Error> {
    let b = top(base, base_ty)?;
    let n = top(new, new_ty)?;
    let mut rows: HashMap<String, DiffRow> = HashMap::new();
    for (side, t) in [(0, &b), (1, &n)] {
        for r in &t.rows {
            let row = rows.entry(r.name.clone()).or_insert_with(|| DiffRow {
                name: r.name.clone(),
                base_self: 0,
                new_self: 0,
                base_total: 0,
                new_total: 0,
                self_delta_pct: 0.0,
                total_delta_pct: 0.0,
            });
            if side == 0 {
                row.base_self = r.self_value;
                row.base_total = r.total;
            } else {
                row.new_self = r.self_value;
                row.new_total = r.total;
            }
        }
    }
    let mut functions: Vec<DiffRow> = rows
        .into_values()
        .map(|mut r| {
            r.self_delta_pct = share(r.new_self, n.total) - share(r.base_self, b.total);
            r.total_delta_pct = share(r.new_total, n.total) - share(r.base_total, b.total);
            r
        })
        .collect();
    // A gauge's change is in what each side held (bytes): a cache that
    // grew 40 MiB comes before one whose share moved as much by standing
    // still while the total grew. Counters: by change of share.
    let gauge = crate::gauge::is_gauge(&b.ty);
    let moved = |pct: f64, base: i64, new: i64| {
        if gauge {
            (new as f64 - base as f64).abs()
        } else {
            pct.abs()
        }
    };
    functions.sort_by(|a, b| {
        moved(b.self_delta_pct, b.base_self, b.new_self)
            .total_cmp(&moved(a.self_delta_pct, a.base_self, a.new_self))
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut stacks: HashMap<String, (i64, i64)> = HashMap::new();
    for line in crate::folded::encode(base, base_ty, false).lines() {
        if let Some((s, v)) = line.rsplit_once(' ') {
            stacks.entry(s.to_string()).or_default().0 += v.parse::<i64>().unwrap_or(0);
        }
    }
    for line in crate::folded::encode(new, new_ty, false).lines() {
        if let Some((s, v)) = line.rsplit_once(' ') {
            stacks.entry(s.to_string()).or_default().1 += v.parse::<i64>().unwrap_or(0);
        }
    }
    let mut stacks: Vec<StackDiff> = stacks
        .into_iter()
        .map(|(stack, (bv, nv))| StackDiff {
            stack,
            base: bv,
            new: nv,
            delta_pct: share(nv, n.total) - share(bv, b.total),
        })
        .collect();
    stacks.sort_by(|a, b| {
        moved(b.delta_pct, b.base, b.new)
            .total_cmp(&moved(a.delta_pct, a.base, a.new))
            .then_with(|| a.stack.cmp(&b.stack))
    });
    Ok(Diff {
        ty: b.ty,
        unit: b.unit,
        base_total: b.total,
        new_total: n.total,
        functions,
        stacks,
    })
}

impl Diff {
    /// `stack base new` lines with the new side scaled to the base total,
    /// the input of `inferno`'s differential flame graph.
    pub fn differential_folded(&self) -> Vec<String> {
        let scale = if self.new_total == 0 {
            1.0
        } else {
            self.base_total as f64 / self.new_total as f64
        };
        let mut lines: Vec<String> = self
            .stacks
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s.stack,
                    s.base,
                    (s.new as f64 * scale).round() as i64
                )
            })
            .collect();
        lines.sort();
        lines
    }
}

/// Which samples to keep.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Filter {
    /// Keep only samples with a frame matching this. Default: none.
    pub focus: Option<Regex>,
    /// Drop samples with a frame matching this. Default: none.
    pub ignore: Option<Regex>,
    /// Keep only samples carrying every one of these `(key, value)` labels.
    /// Default: empty.
    pub keep_labels: Vec<(String, String)>,
    /// Cut each stack below the root-most frame matching this (its callees
    /// are dropped, their value goes to it), as pprof's `-prune_from`.
    /// Default: none.
    pub prune_from: Option<Regex>,
}

impl Filter {
    /// Compiles a pattern, naming it in the error.
    pub fn regex(pattern: &str) -> Result<Regex, Error> {
        Regex::new(pattern).map_err(|e| Error::Regex {
            pattern: pattern.into(),
            message: e.to_string(),
        })
    }
}

/// The samples of `p` that `f` keeps, compacted. Each location is matched
/// against the patterns once.
pub fn filter(p: &Profile, f: &Filter) -> Profile {
    let frames = Frames::new(p);
    let matches = |re: &Option<Regex>| -> Option<Vec<bool>> {
        re.as_ref().map(|re| {
            frames
                .of_location
                .iter()
                .map(|ids| {
                    ids.iter()
                        .any(|&id| re.is_match(frames.names.get(crate::ids::StringId(id))))
                })
                .collect()
        })
    };
    let focus = matches(&f.focus);
    let ignore = matches(&f.ignore);
    let prune = matches(&f.prune_from);
    let wanted: Vec<(crate::ids::StringId, crate::ids::StringId)> = f
        .keep_labels
        .iter()
        .map(|(k, v)| {
            (
                p.strings.find(k).unwrap_or(crate::ids::StringId(u32::MAX)),
                p.strings.find(v).unwrap_or(crate::ids::StringId(u32::MAX)),
            )
        })
        .collect();
    let n = p.sample_types.len();
    let mut out = Profile {
        samples: Vec::new(),
        values: Vec::new(),
        stacks: Default::default(),
        ..p.clone()
    };
    for (i, s) in p.samples.iter().enumerate() {
        let stack = p.stack(s.stack);
        let any = |m: &Vec<bool>| stack.iter().any(|l| m[l.index()]);
        if focus.as_ref().is_some_and(|m| !any(m)) || ignore.as_ref().is_some_and(any) {
            continue;
        }
        let labels = p.labels(s.labels);
        if !wanted
            .iter()
            .all(|&(k, v)| labels.iter().any(|l| l.key == k && l.str == v))
        {
            continue;
        }
        let stack = match &prune {
            Some(m) => match stack.iter().rposition(|l| m[l.index()]) {
                Some(at) => &stack[at..],
                None => stack,
            },
            None => stack,
        };
        let stack = StackId(out.stacks.intern(stack));
        out.samples.push(Sample {
            stack,
            labels: s.labels,
        });
        out.values.extend_from_slice(&p.values[i * n..(i + 1) * n]);
    }
    compact(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folded::{FoldedOptions, decode};

    fn folded(text: &str) -> Profile {
        decode(text.as_bytes(), &FoldedOptions::default()).unwrap()
    }

    #[test]
    fn top_counts_self_total_and_pareto() {
        let p = folded("main;a;hot 70\nmain;b 20\nmain;a;cold 10\nmain;main 0\n");
        let t = top(&p, 0).unwrap();
        assert_eq!(t.total, 100);
        let row = |n: &str| t.rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!((row("hot").self_value, row("hot").total), (70, 70));
        assert_eq!((row("a").self_value, row("a").total), (0, 80));
        assert_eq!(row("main").total, 100);
        assert_eq!(t.rows[0].name, "hot");
        // 70 < 80, so the cut needs the second row too, and no more.
        assert!(row("hot").pareto && row("b").pareto && !row("cold").pareto);
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let p = folded("main;f;f;f 5\n");
        let t = top(&p, 0).unwrap();
        assert_eq!(t.rows.iter().find(|r| r.name == "f").unwrap().total, 5);
    }

    #[test]
    fn flame_tree_budget_folds_into_other() {
        let p = folded("main;a 50\nmain;b 30\nmain;c 15\nmain;d 5\n");
        let full = flame_tree(&p, 0, 0).unwrap();
        assert_eq!(full.nodes.len(), 6);
        let cut = flame_tree(&p, 0, 4).unwrap();
        let names: Vec<&str> = cut.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["total", "main", "a", "b", "other"]);
        let other = cut.nodes.iter().find(|n| n.name == OTHER).unwrap();
        assert_eq!(other.total, 20);
        let mut lines = cut.folded();
        lines.sort();
        assert_eq!(lines, ["main;a 50", "main;b 30", "main;other 20"]);
    }

    #[test]
    fn samples_follow_the_tree_and_its_cut() {
        // Values weigh stacks differently from their counts.
        let values = folded("main;a 50\nmain;b 30\nmain;c 15\nmain;d 5\nmain 1\n");
        let counts = folded("main;a 1\nmain;b 2\nmain;c 3\nmain;d 4\nmain 5\nmain;e 6\n");
        let mut tree = flame_tree(&values, 0, 4).unwrap();
        tree.add_samples(&counts, 0).unwrap();
        let samples = |n: &str| {
            let node = tree.nodes.iter().find(|x| x.name == n).unwrap();
            node.samples.unwrap()
        };
        assert_eq!(samples("total"), 21);
        assert_eq!(samples("main"), 21);
        assert_eq!((samples("a"), samples("b")), (1, 2));
        // c and d were cut into `other`; e, absent from the values, too.
        assert_eq!(samples(OTHER), 13);
        assert!(
            flame_tree(&values, 0, 0).unwrap().nodes[0]
                .samples
                .is_none()
        );
    }

    #[test]
    fn diff_normalises_by_totals() {
        let base = folded("main;a 50\nmain;b 50\n");
        let new = folded("main;a 300\nmain;b 100\n");
        let d = diff(&base, 0, &new, 0).unwrap();
        assert_eq!(d.functions[0].name, "a");
        assert!((d.functions[0].self_delta_pct - 25.0).abs() < 1e-9);
        assert!((d.functions[1].self_delta_pct + 25.0).abs() < 1e-9);
        assert_eq!(d.differential_folded(), ["main;a 50 75", "main;b 50 25"]);
    }

    #[test]
    fn filter_focus_ignore_labels_prune() {
        let opts = FoldedOptions {
            thread_prefix: true,
            ..FoldedOptions::default()
        };
        let p = decode(b"t1;main;a;x 1\nt1;main;b;y 2\nt2;main;a;z 4\n", &opts).unwrap();
        let only = |f: Filter| crate::folded::encode(&filter(&p, &f), 0, false);
        let re = |s: &str| Some(Filter::regex(s).unwrap());
        assert_eq!(
            only(Filter {
                focus: re("^a$"),
                ..Filter::default()
            }),
            "main;a;x 1\nmain;a;z 4\n"
        );
        assert_eq!(
            only(Filter {
                ignore: re("^a$"),
                ..Filter::default()
            }),
            "main;b;y 2\n"
        );
        assert_eq!(
            only(Filter {
                keep_labels: vec![("thread_name".into(), "t2".into())],
                ..Filter::default()
            }),
            "main;a;z 4\n"
        );
        assert_eq!(
            only(Filter {
                prune_from: re("^a$"),
                ..Filter::default()
            }),
            "main;a 5\nmain;b;y 2\n"
        );
        assert!(Filter::regex("(").is_err());
    }
}
