//! Pyroscope's flamebearer JSON: the flame graph as levels of blocks.
//! Each level lists its blocks left to right as `[x, total, self, name]`
//! (single) or `[lx, ltotal, lself, rx, rtotal, rself, name]` (diff), with
//! every x stored relative to the end of the block before it on that level.

use std::collections::HashMap;

use kiln_profile::FlameTree;
use serde_json::{Value, json};

/// Levels of a single flame graph from `tree`.
pub fn single(tree: &FlameTree) -> Value {
    let mut names: Vec<String> = Vec::new();
    let mut name_ix: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Vec<i64>> = Vec::new();
    // Per level, where the last block ended.
    let mut ends: Vec<i64> = Vec::new();
    let mut max_self = 0;
    // (node, depth, x), depth-first so that each level fills left to right.
    let mut stack = vec![(0u32, 0usize, 0i64)];
    while let Some((n, depth, x)) = stack.pop() {
        let node = &tree.nodes[n as usize];
        let ix = *name_ix.entry(node.name.as_str()).or_insert_with(|| {
            names.push(node.name.clone());
            names.len() - 1
        });
        if levels.len() <= depth {
            levels.push(Vec::new());
            ends.push(0);
        }
        levels[depth].extend_from_slice(&[x - ends[depth], node.total, node.self_value, ix as i64]);
        ends[depth] = x + node.total;
        max_self = max_self.max(node.self_value);
        // Children start at the parent's x, in order; pushed reversed so
        // the first pops first.
        let mut cx = x;
        let mut kids = Vec::with_capacity(node.children.len());
        for &c in &node.children {
            kids.push((c, depth + 1, cx));
            cx += tree.nodes[c as usize].total;
        }
        stack.extend(kids.into_iter().rev());
    }
    let total = tree.nodes.first().map_or(0, |n| n.total);
    json!({
        "names": names,
        "levels": levels,
        "numTicks": total,
        "maxSelf": max_self,
    })
}

/// A node of the diff tree: totals and selves on both sides.
#[derive(Default)]
struct Both {
    name: String,
    l: (i64, i64),
    r: (i64, i64),
    children: Vec<usize>,
}

/// Levels of a diff flame graph of `left` and `right`: one tree over the
/// union of their stacks.
pub fn diff(left: &FlameTree, right: &FlameTree) -> Value {
    let mut nodes = vec![Both {
        name: "total".into(),
        ..Both::default()
    }];
    let mut child: HashMap<(usize, String), usize> = HashMap::new();
    for (side, tree) in [(0, left), (1, right)] {
        // (tree node, merged node)
        let mut stack = vec![(0u32, 0usize)];
        while let Some((n, m)) = stack.pop() {
            let node = &tree.nodes[n as usize];
            let v = (node.total, node.self_value);
            if side == 0 {
                nodes[m].l.0 += v.0;
                nodes[m].l.1 += v.1;
            } else {
                nodes[m].r.0 += v.0;
                nodes[m].r.1 += v.1;
            }
            for &c in &node.children {
                let name = tree.nodes[c as usize].name.clone();
                let key = (m, name.clone());
                let cm = match child.get(&key) {
                    Some(&cm) => cm,
                    None => {
                        nodes.push(Both {
                            name,
                            ..Both::default()
                        });
                        let cm = nodes.len() - 1;
                        nodes[m].children.push(cm);
                        child.insert(key, cm);
                        cm
                    }
                };
                stack.push((c, cm));
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut name_ix: HashMap<String, usize> = HashMap::new();
    let mut levels: Vec<Vec<i64>> = Vec::new();
    let mut ends: Vec<(i64, i64)> = Vec::new();
    let mut max_self = 0;
    let mut stack = vec![(0usize, 0usize, 0i64, 0i64)];
    while let Some((m, depth, lx, rx)) = stack.pop() {
        let node = &nodes[m];
        let ix = match name_ix.get(&node.name) {
            Some(&i) => i,
            None => {
                names.push(node.name.clone());
                name_ix.insert(node.name.clone(), names.len() - 1);
                names.len() - 1
            }
        };
        if levels.len() <= depth {
            levels.push(Vec::new());
            ends.push((0, 0));
        }
        let (le, re) = ends[depth];
        levels[depth].extend_from_slice(&[
            lx - le,
            node.l.0,
            node.l.1,
            rx - re,
            node.r.0,
            node.r.1,
            ix as i64,
        ]);
        ends[depth] = (lx + node.l.0, rx + node.r.0);
        max_self = max_self.max(node.l.1).max(node.r.1);
        let mut kids: Vec<usize> = node.children.clone();
        kids.sort_by(|&a, &b| nodes[a].name.cmp(&nodes[b].name));
        let (mut cl, mut cr) = (lx, rx);
        let mut push = Vec::with_capacity(kids.len());
        for c in kids {
            push.push((c, depth + 1, cl, cr));
            cl += nodes[c].l.0;
            cr += nodes[c].r.0;
        }
        stack.extend(push.into_iter().rev());
    }
    json!({
        "names": names,
        "levels": levels,
        "numTicks": nodes[0].l.0 + nodes[0].r.0,
        "maxSelf": max_self,
        "leftTicks": nodes[0].l.0,
        "rightTicks": nodes[0].r.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_profile::DecodeOptions;

    fn tree(text: &str) -> FlameTree {
        let p = kiln_profile::decode(text.as_bytes(), &DecodeOptions::default()).unwrap();
        kiln_profile::flame_tree(&p, 0, 0).unwrap()
    }

    /// Undoes the relative x of one level: absolute (x, total, name).
    fn absolute(
        levels: &Value,
        names: &Value,
        level: usize,
        width: usize,
    ) -> Vec<(i64, i64, String)> {
        let l = levels[level].as_array().unwrap();
        let mut out = Vec::new();
        let mut end = 0;
        for b in l.chunks(width) {
            let x = end + b[0].as_i64().unwrap();
            let total = b[1].as_i64().unwrap();
            let name = names[b[width - 1].as_u64().unwrap() as usize]
                .as_str()
                .unwrap()
                .to_string();
            out.push((x, total, name));
            end = x + total;
        }
        out
    }

    #[test]
    fn levels_place_blocks_under_their_parents() {
        let fb = single(&tree("main;a;x 3\nmain;b 5\nmain;a 2\nother 1\n"));
        assert_eq!(fb["numTicks"], 11);
        let (levels, names) = (&fb["levels"], &fb["names"]);
        assert_eq!(absolute(levels, names, 0, 4), vec![(0, 11, "total".into())]);
        let l1 = absolute(levels, names, 1, 4);
        assert_eq!(l1, vec![(0, 10, "main".into()), (10, 1, "other".into())]);
        let l2 = absolute(levels, names, 2, 4);
        assert_eq!(l2, vec![(0, 5, "a".into()), (5, 5, "b".into())]);
        assert_eq!(absolute(levels, names, 3, 4), vec![(0, 3, "x".into())]);
        assert_eq!(fb["maxSelf"], 5);
    }

    #[test]
    fn diff_levels_carry_both_sides() {
        let fb = diff(&tree("main;a 3\nmain;b 1\n"), &tree("main;a 1\nmain;c 4\n"));
        assert_eq!(
            (fb["leftTicks"].as_i64(), fb["rightTicks"].as_i64()),
            (Some(4), Some(5))
        );
        let l2 = fb["levels"][2].as_array().unwrap();
        // a, b, c in name order: a is 3 → 1, b 1 → 0, c 0 → 4.
        let totals: Vec<(i64, i64)> = l2
            .chunks(7)
            .map(|b| (b[1].as_i64().unwrap(), b[4].as_i64().unwrap()))
            .collect();
        assert_eq!(totals, vec![(3, 1), (1, 0), (0, 4)]);
    }
}
