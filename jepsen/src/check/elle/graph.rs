//! The transaction dependency graph: typed edges (ww, wr, rw, real-time), strongly connected
//! components (iterative Tarjan) and, per component, one cycle chosen to name the weakest
//! isolation level it violates: G0 (ww only), G1c (ww+wr), G-single (exactly one rw),
//! G2-item (two or more rw); a cycle that needs a real-time edge gets a `-realtime` suffix.

use std::collections::{BTreeMap, VecDeque};

/// Kinds of dependency, as bits so that one (from, to) pair can carry several.
pub const WW: u8 = 1;
pub const WR: u8 = 2;
pub const RW: u8 = 4;
pub const RT: u8 = 8;

/// One edge label: its kind and the key it comes from (none for real-time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub kind: u8,
    pub key: Option<u64>,
}

/// A directed multigraph over transaction ids `0..n`.
#[derive(Debug, Default)]
pub struct Graph {
    pub n: usize,
    /// (from, to) -> labels, and adjacency for iteration.
    edges: BTreeMap<(usize, usize), Vec<Label>>,
    adj: Vec<Vec<usize>>,
}

impl Graph {
    pub fn new(n: usize) -> Self {
        Graph {
            n,
            edges: BTreeMap::new(),
            adj: vec![Vec::new(); n],
        }
    }

    pub fn add(&mut self, from: usize, to: usize, kind: u8, key: Option<u64>) {
        if from == to {
            return;
        }
        let labels = self.edges.entry((from, to)).or_default();
        if labels.is_empty() {
            self.adj[from].push(to);
        }
        if !labels.iter().any(|l| l.kind == kind && l.key == key) {
            labels.push(Label { kind, key });
        }
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// The best label of (from, to) among `allowed` kinds (ww before wr before rw before rt).
    fn label(&self, from: usize, to: usize, allowed: u8) -> Option<Label> {
        let ls = self.edges.get(&(from, to))?;
        [WW, WR, RW, RT]
            .into_iter()
            .filter(|k| allowed & k != 0)
            .find_map(|k| ls.iter().find(|l| l.kind == k).copied())
    }

    /// Strongly connected components with more than one node (iterative Tarjan).
    pub fn sccs(&self) -> Vec<Vec<usize>> {
        let n = self.n;
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut out = Vec::new();
        let mut next = 0;
        for root in 0..n {
            if index[root] != usize::MAX {
                continue;
            }
            // (node, position in its adjacency list)
            let mut call: Vec<(usize, usize)> = vec![(root, 0)];
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (v, ref mut i)) = call.last_mut() {
                if *i < self.adj[v].len() {
                    let w = self.adj[v][*i];
                    *i += 1;
                    if index[w] == usize::MAX {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        call.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                } else {
                    call.pop();
                    if let Some(&(u, _)) = call.last() {
                        low[u] = low[u].min(low[v]);
                    }
                    if low[v] == index[v] {
                        let mut comp = Vec::new();
                        while let Some(w) = stack.pop() {
                            on_stack[w] = false;
                            comp.push(w);
                            if w == v {
                                break;
                            }
                        }
                        if comp.len() > 1 {
                            comp.sort_unstable();
                            out.push(comp);
                        }
                    }
                }
            }
        }
        out
    }

    /// A shortest path `from` -> `to` (as edges) within `members`, using `allowed` kinds.
    fn path(
        &self,
        from: usize,
        to: usize,
        members: &[bool],
        allowed: u8,
    ) -> Option<Vec<(usize, usize, Label)>> {
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = vec![false; self.n];
        seen[from] = true;
        while let Some(v) = queue.pop_front() {
            for &w in &self.adj[v] {
                if !members[w] || self.label(v, w, allowed).is_none() {
                    continue;
                }
                if w == to {
                    let mut path = Vec::new();
                    let mut cur = v;
                    path.push((v, w, self.label(v, w, allowed)?));
                    while cur != from {
                        let p = prev[&cur];
                        path.push((p, cur, self.label(p, cur, allowed)?));
                        cur = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                if !seen[w] {
                    seen[w] = true;
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        None
    }

    /// A cycle through `members` using only `allowed` kinds, if any.
    fn cycle(&self, members: &[bool], nodes: &[usize], allowed: u8) -> Option<Cycle> {
        nodes
            .iter()
            .find_map(|&v| self.path(v, v, members, allowed))
            .map(|edges| Cycle { edges })
    }

    /// A cycle with exactly one rw edge (the rest from `base`), if any.
    fn single_rw_cycle(&self, members: &[bool], nodes: &[usize], base: u8) -> Option<Cycle> {
        for &a in nodes {
            for &b in &self.adj[a] {
                if !members[b] {
                    continue;
                }
                let Some(rw) = self.label(a, b, RW).filter(|l| l.kind == RW) else {
                    continue;
                };
                if let Some(mut rest) = self.path(b, a, members, base) {
                    rest.insert(0, (a, b, rw));
                    return Some(Cycle { edges: rest });
                }
            }
        }
        None
    }

    /// One classified cycle for a strongly connected component.
    pub fn classify(&self, comp: &[usize]) -> Option<(String, Cycle)> {
        let mut members = vec![false; self.n];
        for &v in comp {
            members[v] = true;
        }
        for rt in [0, RT] {
            let suffix = if rt == 0 { "" } else { "-realtime" };
            let found = self
                .cycle(&members, comp, WW | rt)
                .map(|c| ("G0", c))
                .or_else(|| self.cycle(&members, comp, WW | WR | rt).map(|c| ("G1c", c)))
                .or_else(|| {
                    self.single_rw_cycle(&members, comp, WW | WR | rt)
                        .map(|c| ("G-single", c))
                })
                .or_else(|| {
                    self.cycle(&members, comp, WW | WR | RW | rt)
                        .map(|c| ("G2-item", c))
                });
            if let Some((name, c)) = found {
                // Name it by what the cycle actually uses.
                let uses_rt = c.edges.iter().any(|e| e.2.kind == RT);
                let name = if uses_rt {
                    format!("{name}{suffix}")
                } else {
                    name.to_string()
                };
                return Some((name, c));
            }
        }
        None
    }
}

/// A cycle as its edges, each (from, to, label).
#[derive(Debug, Clone)]
pub struct Cycle {
    pub edges: Vec<(usize, usize, Label)>,
}

/// Short name of an edge kind.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        WW => "ww",
        WR => "wr",
        RW => "rw",
        _ => "rt",
    }
}
