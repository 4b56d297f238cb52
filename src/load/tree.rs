//! The run tree: names, which group uses what, cycles, the order templates
//! may rely on, and finally the [`Node`] tree itself.
//!
//! Steps and groups share one namespace. The first group is the root; every
//! other step and group must be listed exactly once (an `each` counts as a
//! use). A template may read `steps.NAME.output` only when NAME is certain to
//! have finished successfully before the step starts: their lowest common
//! ancestor is a `sequence` in which NAME's branch comes first and that stops
//! at a failure (not `on_error = "continue"`, which goes on after a failed
//! child), and NAME is not inside a `race` below that ancestor (a race's
//! losers are cancelled).
//!
//! A group's `finally` and the `[handlers]` are steps or groups no group
//! lists. For the checks they stand where they run: a finally right after
//! its group (a hidden sequence of the two takes the group's place), the
//! handlers after the root (a hidden sequence of the root and the handlers,
//! in running order). Inside them a template may read any node that has
//! ended by then, whether it succeeded or not (`steps.NAME.status`,
//! `run.status`); outside them the rule above holds, and a node inside a
//! finally counts as one that may have failed (a finally's failure does not
//! fail its group).
//!
//! Architecture Invariant: nothing here is quadratic in the number of steps:
//! names are looked up in a `HashMap`, cycles are found in one pass over the
//! parent links, and a reference check climbs at most the depth of the tree.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::diagnostic::closest;
use super::fields::Ctx;
use super::step::RawStep;
use super::toml_job::{RawGroup, RawHandlers};
use crate::job::{Group, GroupMode, Handlers, Node, OnError};

/// Groups nested deeper than this are refused: a tree this deep is a mistake,
/// and walking it recursively (drop, debug, the executor) could overflow the stack.
pub(crate) const MAX_DEPTH: usize = 100;

/// Comparisons spent on did-you-mean suggestions before giving up, so a file
/// with thousands of unknown names among thousands of steps stays fast.
const SUGGESTION_BUDGET: usize = 2_000_000;

/// The links between steps and groups. Ids: steps `0..n_steps`, then groups.
/// With no `[[group]]`, one synthetic `main` sequence group is added.
struct Tree {
    n_steps: usize,
    /// Name and its span, per id (`None` for unnamed steps and groups).
    names: Vec<Option<(String, Range<usize>)>>,
    /// The group that lists it (or has it as `each`), per id.
    parent: Vec<Option<usize>>,
    /// Where that use is written.
    use_span: Vec<Option<Range<usize>>>,
    /// Position in the parent's list.
    index: Vec<usize>,
    /// For `each` steps: the group they belong to.
    each_of: Vec<Option<usize>>,
    /// For a group's `finally`: that group.
    finally_of: Vec<Option<usize>>,
    /// Per group (id - n_steps): its `finally`.
    finally: Vec<Option<usize>>,
    /// The handlers, in running order.
    handlers: Vec<usize>,
    /// Ids from here on are the hidden sequences of the checks (see the
    /// module docs); the last one, when there are handlers, holds them.
    hidden_from: usize,
    /// Per group (id - n_steps): mode, children ids, each id.
    modes: Vec<Option<GroupMode>>,
    /// Per group: what a child's failure does (`on_error`).
    on_errors: Vec<OnError>,
    children: Vec<Vec<usize>>,
    each: Vec<Option<usize>>,
    /// Name → id, for the first definition of each name.
    by_name: HashMap<String, usize, foldhash::fast::RandomState>,
    /// The ids of all names in file order: did-you-mean candidates.
    all_names: Vec<usize>,
    /// Names offered as did-you-mean for a misspelt use: not also "unused".
    suggested: HashSet<String>,
    suggestion_budget: usize,
}

impl Tree {
    fn name(&self, id: usize) -> &str {
        self.names.get(id).and_then(Option::as_ref).map_or("?", |(n, _)| n.as_str())
    }

    /// Whether `n` is in a handler or a `finally` (or is one).
    fn in_outcome(&self, mut n: usize) -> bool {
        loop {
            if self.finally_of[n].is_some() || self.handlers.contains(&n) {
                return true;
            }
            match self.parent[n] {
                Some(p) => n = p,
                None => return false,
            }
        }
    }

    /// The nearest `finally` at or above `n` and below its ancestor `top`.
    fn finally_between(&self, mut n: usize, top: usize) -> Option<usize> {
        while n != top {
            if self.finally_of[n].is_some() {
                return Some(n);
            }
            n = self.parent[n]?;
        }
        None
    }

    fn is_group(&self, id: usize) -> bool {
        id >= self.n_steps
    }

    fn mode(&self, id: usize) -> Option<GroupMode> {
        self.modes.get(id.checked_sub(self.n_steps)?).copied().flatten()
    }

    /// The `on_error` of group `id` (`cancel` for a step).
    fn on_error(&self, id: usize) -> OnError {
        id.checked_sub(self.n_steps).and_then(|g| self.on_errors.get(g)).copied().unwrap_or(OnError::Cancel)
    }

    fn what(&self, id: usize) -> &'static str {
        if self.is_group(id) { "group" } else { "step" }
    }

    /// `did you mean `x`?` among all names, while the budget lasts.
    fn suggest(&mut self, name: &str) -> Option<String> {
        let cost = self.all_names.len();
        if cost > self.suggestion_budget {
            return None;
        }
        self.suggestion_budget -= cost;
        let candidates = self.all_names.iter().filter_map(|&id| self.names[id].as_ref().map(|(n, _)| n.as_str()));
        let c = closest(name, candidates)?.to_string();
        let help = format!("did you mean `{c}`?");
        self.suggested.insert(c);
        Some(help)
    }

    /// How many ancestors `n` has.
    fn depth(&self, mut n: usize) -> usize {
        let mut d = 0;
        while let Some(p) = self.parent[n] {
            d += 1;
            n = p;
        }
        d
    }

    /// The lowest common ancestor of `a` and `b` (neither an ancestor of the
    /// other), with its children on each side; `None` when they are not in
    /// one tree. Climbs at most the depth of the tree.
    fn lca(&self, mut a: usize, mut b: usize) -> Option<Lca> {
        let (mut da, mut db) = (self.depth(a), self.depth(b));
        while da > db {
            a = self.parent[a].unwrap_or(a);
            da -= 1;
        }
        while db > da {
            b = self.parent[b].unwrap_or(b);
            db -= 1;
        }
        while self.parent[a] != self.parent[b] {
            a = self.parent[a]?;
            b = self.parent[b]?;
        }
        Some(Lca { node: self.parent[a]?, a, b })
    }

    /// The nearest `race` group above `n` and below its ancestor `top`, if any.
    fn race_between(&self, mut n: usize, top: usize) -> Option<usize> {
        while let Some(p) = self.parent[n] {
            if p == top {
                break;
            }
            if self.mode(p) == Some(GroupMode::Race) {
                return Some(p);
            }
            n = p;
        }
        None
    }

    /// Whether `a` is `b` or one of its ancestors.
    fn is_ancestor_or_self(&self, a: usize, mut b: usize) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.parent[b] {
                Some(p) => b = p,
                None => return false,
            }
        }
    }
}

/// Checks the tree and builds the root [`Node`]; reports every problem to
/// `ctx` and returns `None` if there is any (here or found earlier).
pub(crate) fn build(
    ctx: &mut Ctx,
    mut steps: Vec<RawStep>,
    groups: Vec<RawGroup>,
    handlers: &RawHandlers,
) -> Option<(Node, Handlers)> {
    let n_steps = steps.len();
    let synthetic = groups.is_empty();
    let mut tree = Tree::new(&steps, &groups);
    let root = n_steps;
    let errors_before = ctx.diagnostics.len();

    let duplicates = check_names(ctx, &mut tree, synthetic);
    if synthetic {
        link_outside(ctx, &mut tree, &groups, handlers);
        // The steps a handler names are not in `main`.
        tree.children[0] = (0..n_steps).filter(|&id| tree.use_span[id].is_none()).collect();
        for (i, id) in tree.children[0].clone().into_iter().enumerate() {
            tree.parent[id] = Some(root);
            tree.index[id] = i;
        }
    } else {
        link_groups(ctx, &mut tree, &groups);
        link_outside(ctx, &mut tree, &groups, handlers);
        let cyclic = check_cycles(ctx, &tree);
        let all_known = groups.iter().all(|g| g.children_known);
        if all_known {
            check_unused(ctx, &tree, &duplicates, &cyclic);
        }
    }
    let tree_ok = ctx.diagnostics.len() == errors_before && groups.iter().all(|g| g.children_known);
    if !tree_ok || !check_finally_cycles(ctx, &tree) {
        return None;
    }
    let order = breadth_first(&tree, root);
    if !check_depth(ctx, &tree, &order) {
        return None;
    }
    link_hidden(&mut tree, root);
    for (s, raw) in steps.iter().enumerate() {
        check_references(ctx, &mut tree, s, raw);
    }
    if !ctx.diagnostics.is_empty() {
        return None;
    }
    let mut built = assemble(&tree, &mut steps, &groups, &order)?;
    let root_node = built[n_steps].take()?;
    let mut out = Handlers::default();
    for (&id, (key, _, _)) in tree.handlers.iter().zip(&handlers.named) {
        let node = Some(Box::new(built[id].take()?));
        match *key {
            "on_failure" => out.on_failure = node,
            "on_success" => out.on_success = node,
            _ => out.on_exit = node,
        }
    }
    Some((root_node, out))
}

/// Links each group's `finally` and the handlers: each must name a step or
/// group no group lists, used nowhere else.
fn link_outside(ctx: &mut Ctx, tree: &mut Tree, groups: &[RawGroup], handlers: &RawHandlers) {
    let n_steps = tree.n_steps;
    for (g, raw) in groups.iter().enumerate() {
        let Some((name, span)) = &raw.finally else { continue };
        let Some(f) = lookup(ctx, tree, name, span) else { continue };
        if claim(ctx, tree, f, span) {
            tree.finally_of[f] = Some(n_steps + g);
            tree.finally[g] = Some(f);
        }
    }
    for (_, name, span) in &handlers.named {
        if let Some(h) = lookup(ctx, tree, name, span)
            && claim(ctx, tree, h, span)
        {
            tree.handlers.push(h);
        }
    }
}

/// Records a use of `id` outside any group's list at `span` (a `finally`, a
/// handler); reports the root, or a second use.
fn claim(ctx: &mut Ctx, tree: &mut Tree, id: usize, span: &Range<usize>) -> bool {
    if id == tree.n_steps {
        ctx.error(span.clone(), format!("`{}` is the root group: it cannot run after another", tree.name(id)))
            .label("the root is named here")
            .help("name a step or group that no group lists");
        return false;
    }
    if let Some(first) = tree.use_span[id].clone() {
        ctx.error(span.clone(), format!("{} `{}` is used in two places", tree.what(id), tree.name(id)))
            .label("second use")
            .note(first, "first used here")
            .help("a `finally` or a handler is a step or group of its own, listed in no group; define a copy with its own name");
        return false;
    }
    tree.use_span[id] = Some(span.clone());
    true
}

/// Refuses a `finally` that contains its own group (it would run inside
/// what it follows). Following parent links, and from a finally to its
/// group, once.
fn check_finally_cycles(ctx: &mut Ctx, tree: &Tree) -> bool {
    let total = tree.names.len();
    let up = |n: usize| tree.parent[n].or(tree.finally_of[n]);
    let mut state = vec![0u8; total];
    for start in 0..total {
        let mut path = Vec::new();
        let mut cur = start;
        let closed = loop {
            if state[cur] != 0 {
                break state[cur] == 1;
            }
            state[cur] = 1;
            path.push(cur);
            match up(cur) {
                Some(p) => cur = p,
                None => break false,
            }
        };
        if closed {
            // The cycle passes through a finally (groups alone were checked).
            let at = path.iter().position(|&n| n == cur).unwrap_or(0);
            if let Some(&f) = path[at..].iter().find(|&&n| tree.finally_of[n].is_some()) {
                let g = tree.finally_of[f].unwrap_or(f);
                ctx.error(
                    tree.use_span[f].clone().unwrap_or(0..0),
                    format!("`{}` is the finally of group `{}` but contains it", tree.name(f), tree.name(g)),
                )
                .label("runs inside the group it follows")
                .help("a finally runs after its group: name a step or group outside it");
                return false;
            }
        }
        for n in path {
            state[n] = 2;
        }
    }
    true
}

/// Adds the hidden sequences of the checks (see the module docs): each
/// group with a `finally` and the finally under one in the group's place,
/// then the top of the tree and the handlers under one.
fn link_hidden(tree: &mut Tree, root: usize) {
    let n_groups = tree.finally.len();
    for g in 0..n_groups {
        let Some(f) = tree.finally[g] else { continue };
        let gid = tree.n_steps + g;
        let v = tree.hidden(tree.parent[gid], tree.index[gid], vec![gid, f]);
        tree.parent[gid] = Some(v);
        tree.index[gid] = 0;
        tree.parent[f] = Some(v);
        tree.index[f] = 1;
    }
    if tree.handlers.is_empty() {
        return;
    }
    let mut top = root;
    while let Some(p) = tree.parent[top] {
        top = p;
    }
    let mut children = vec![top];
    children.extend(tree.handlers.iter().copied());
    let v = tree.hidden(None, 0, children.clone());
    for (i, c) in children.into_iter().enumerate() {
        tree.parent[c] = Some(v);
        tree.index[c] = i;
    }
}

impl Tree {
    /// The names of `steps` and `groups` (or of the synthetic root `main`
    /// when there are no groups), nothing linked yet.
    fn new(steps: &[RawStep], groups: &[RawGroup]) -> Tree {
        let n_steps = steps.len();
        let synthetic = groups.is_empty();
        let n_groups = groups.len().max(1);
        let total = n_steps + n_groups;
        let mut names: Vec<Option<(String, Range<usize>)>> = steps.iter().map(|s| s.name.clone()).collect();
        if synthetic {
            names.push(Some(("main".to_string(), 0..0)));
        } else {
            names.extend(groups.iter().map(|g| g.name.clone()));
        }
        Tree {
            n_steps,
            all_names: Vec::with_capacity(total),
            names,
            parent: vec![None; total],
            use_span: vec![None; total],
            index: vec![0; total],
            each_of: vec![None; total],
            finally_of: vec![None; total],
            finally: vec![None; n_groups],
            handlers: Vec::new(),
            hidden_from: total,
            modes: if synthetic { vec![Some(GroupMode::Sequence)] } else { groups.iter().map(|g| g.mode).collect() },
            on_errors: if synthetic { vec![OnError::Cancel] } else { groups.iter().map(|g| g.on_error).collect() },
            children: vec![Vec::new(); n_groups],
            each: vec![None; n_groups],
            by_name: HashMap::with_capacity_and_hasher(total, Default::default()),
            suggestion_budget: SUGGESTION_BUDGET,
            suggested: HashSet::new(),
        }
    }
}

impl Tree {
    /// A hidden sequence of `children` at `index` under `parent`; its id.
    fn hidden(&mut self, parent: Option<usize>, index: usize, children: Vec<usize>) -> usize {
        let id = self.names.len();
        self.names.push(None);
        self.parent.push(parent);
        self.use_span.push(None);
        self.index.push(index);
        self.each_of.push(None);
        self.finally_of.push(None);
        self.modes.push(Some(GroupMode::Sequence));
        self.children.push(children);
        self.each.push(None);
        self.finally.push(None);
        id
    }
}

/// Builds every node of a checked tree from its steps (taken out of
/// `steps`), bottom-up along `order` so deep trees need no recursion here;
/// the root is at the first group's id.
fn assemble(tree: &Tree, steps: &mut [RawStep], groups: &[RawGroup], order: &[usize]) -> Option<Vec<Option<Node>>> {
    let n_steps = tree.n_steps;
    let total = tree.hidden_from;
    let synthetic = groups.is_empty();
    let mut built: Vec<Option<Node>> = Vec::with_capacity(total);
    built.extend(steps.iter_mut().map(|s| s.step.take().map(Node::Step)));
    built.resize_with(total, || None);
    for &id in order.iter().rev() {
        if !tree.is_group(id) {
            continue;
        }
        let g = id - n_steps;
        // Sized up front (collecting into an Option<Vec> could not be): a
        // 100,000-child group would otherwise double its way up.
        let mut children = Vec::with_capacity(tree.children[g].len());
        for &c in &tree.children[g] {
            children.push(built[c].take()?);
        }
        let each = match tree.each[g] {
            Some(e) => match built[e].take()? {
                Node::Step(step) => Some(Box::new(step)),
                Node::Group(_) | Node::Script(_) => return None,
            },
            None => None,
        };
        let group = if synthetic {
            Group {
                name: "main".to_string(),
                mode: GroupMode::Sequence,
                children,
                limit: None,
                on_error: OnError::Cancel,
                timeout: None,
                each: None,
                finally: None,
            }
        } else {
            let raw = &groups[g];
            Group {
                name: tree.name(id).to_string(),
                mode: raw.mode?,
                children,
                limit: raw.limit,
                on_error: raw.on_error,
                timeout: raw.timeout,
                each,
                finally: match tree.finally[g] {
                    Some(f) => Some(Box::new(built[f].take()?)),
                    None => None,
                },
            }
        };
        built[id] = Some(Node::Group(group));
    }
    Some(built)
}

/// Registers every name; reports duplicates (at the later one). Returns, per
/// id, whether it lost to an earlier definition of its name.
fn check_names(ctx: &mut Ctx, tree: &mut Tree, synthetic: bool) -> Vec<bool> {
    let total = tree.names.len();
    let real = if synthetic { tree.n_steps } else { total };
    let mut order: Vec<usize> = (0..real).filter(|&id| tree.names[id].is_some()).collect();
    order.sort_by_key(|&id| tree.names[id].as_ref().map_or(0, |(_, s)| s.start));
    let mut duplicate = vec![false; total];
    for id in order {
        let Some((name, span)) = tree.names[id].clone() else {
            continue;
        };
        tree.all_names.push(id);
        match tree.by_name.get(&name) {
            Some(&first) => {
                duplicate[id] = true;
                let first_span = tree.names[first].as_ref().map_or(0..0, |(_, s)| s.clone());
                let (a, b) = (tree.what(first), tree.what(id));
                let message = if a == b {
                    format!("two {a}s are named `{name}`")
                } else {
                    format!("a {a} and a {b} are both named `{name}`")
                };
                ctx.error(span, message)
                    .label("second definition")
                    .note(first_span, "first defined here")
                    .help("steps and groups share one namespace; rename one of them");
            }
            None => {
                tree.by_name.insert(name, id);
            }
        }
    }
    duplicate
}

/// Reads each group's list and `each` into parent links; reports unknown
/// names, the root listed somewhere, and names used twice.
fn link_groups(ctx: &mut Ctx, tree: &mut Tree, groups: &[RawGroup]) {
    let n_steps = tree.n_steps;
    let root = n_steps;
    for (g, raw) in groups.iter().enumerate() {
        let gid = n_steps + g;
        for (i, (name, span)) in raw.children.iter().enumerate() {
            let Some(child) = lookup(ctx, tree, name, span) else {
                continue;
            };
            if use_once(ctx, tree, child, gid, span, root) {
                tree.index[child] = i;
                tree.children[g].push(child);
            }
        }
        if let Some((name, span)) = &raw.each {
            let Some(e) = lookup(ctx, tree, name, span) else {
                continue;
            };
            if tree.is_group(e) {
                ctx.error(span.clone(), format!("`each` must name a step; `{name}` is a group"))
                    .label("expected a step name")
                    .help("`each` runs one step per result, with the result as `{{ input }}`");
                continue;
            }
            if use_once(ctx, tree, e, gid, span, root) {
                tree.each_of[e] = Some(gid);
                tree.each[g] = Some(e);
            }
        }
    }
}

/// The id of `name`, or a diagnostic with a did-you-mean.
fn lookup(ctx: &mut Ctx, tree: &mut Tree, name: &str, span: &Range<usize>) -> Option<usize> {
    if let Some(&id) = tree.by_name.get(name) {
        return Some(id);
    }
    let help = tree
        .suggest(name)
        .unwrap_or_else(|| format!("define it with `[[step]]` and `name = \"{name}\"`, or fix the name"));
    ctx.error(span.clone(), format!("no step or group is named `{name}`")).label("unknown name").help(help);
    None
}

/// Records that group `gid` uses `child` at `span`; reports a second use.
fn use_once(ctx: &mut Ctx, tree: &mut Tree, child: usize, gid: usize, span: &Range<usize>, root: usize) -> bool {
    if child == root {
        ctx.error(span.clone(), format!("`{}` is the root group and cannot be listed in a group", tree.name(root)))
            .label("the root is listed here")
            .help("the first `[[group]]` is the root: it runs the whole job; put a different group first, or remove this entry");
        return false;
    }
    if let Some(first) = tree.use_span[child].clone() {
        ctx.error(span.clone(), format!("{} `{}` is used in two places", tree.what(child), tree.name(child)))
            .label("second use")
            .note(first, "first used here")
            .help("a step or group runs once, where it is listed; to run it twice, define a copy with its own name");
        return false;
    }
    tree.parent[child] = Some(gid);
    tree.use_span[child] = Some(span.clone());
    true
}

/// Finds groups that contain themselves, following parent links once.
/// Returns, per id, whether it lies on a cycle.
fn check_cycles(ctx: &mut Ctx, tree: &Tree) -> Vec<bool> {
    let total = tree.names.len();
    let mut state = vec![0u8; total]; // 0 new, 1 on the current path, 2 done
    let mut cyclic = vec![false; total];
    for start in tree.n_steps..total {
        let mut path = Vec::new();
        let mut cur = start;
        let closed = loop {
            if state[cur] != 0 {
                break state[cur] == 1;
            }
            state[cur] = 1;
            path.push(cur);
            match tree.parent[cur] {
                Some(p) => cur = p,
                None => break false,
            }
        };
        if closed {
            let at = path.iter().position(|&n| n == cur).unwrap_or(0);
            report_cycle(ctx, tree, &path[at..]);
            for &n in &path[at..] {
                cyclic[n] = true;
            }
        }
        for n in path {
            state[n] = 2;
        }
    }
    cyclic
}

/// `upward` lists a cycle child → parent; the message reads parent → child.
fn report_cycle(ctx: &mut Ctx, tree: &Tree, upward: &[usize]) {
    let mut down: Vec<usize> = upward.iter().rev().copied().collect();
    // Start at the group written first, so the message does not depend on
    // where the search entered the cycle.
    let first =
        (0..down.len()).min_by_key(|&i| tree.names[down[i]].as_ref().map_or(usize::MAX, |(_, s)| s.start)).unwrap_or(0);
    down.rotate_left(first);
    let head = down[0];
    let mut chain: Vec<&str> = down.iter().map(|&g| tree.name(g)).collect();
    chain.push(tree.name(head));
    let message = if down.len() == 1 {
        format!("group `{}` lists itself", tree.name(head))
    } else {
        format!("groups contain each other in a cycle: {}", chain.join(" → "))
    };
    let closing = tree.use_span[head].clone().unwrap_or(0..0);
    let last = down[down.len() - 1];
    let d = ctx.error(closing, message);
    d.label(format!("`{}` is listed inside its own subtree here", tree.name(head)));
    for &g in &down[1..] {
        if let Some(span) = tree.use_span[g].clone() {
            let parent = tree.parent[g].map_or("?", |p| tree.name(p));
            d.note(span, format!("`{}` listed in `{parent}`", tree.name(g)));
        }
    }
    if head == last {
        d.help(format!("a group cannot run inside itself; remove `{}` from its own list", tree.name(head)));
    } else {
        d.help(format!("a group cannot run inside itself; remove `{}` from `{}`", tree.name(head), tree.name(last)));
    }
}

/// Reports steps and groups no group lists.
fn check_unused(ctx: &mut Ctx, tree: &Tree, duplicate: &[bool], cyclic: &[bool]) {
    let root = tree.n_steps;
    for id in 0..tree.names.len() {
        if id == root || tree.parent[id].is_some() || tree.use_span[id].is_some() || duplicate[id] || cyclic[id] {
            continue;
        }
        let Some((name, span)) = &tree.names[id] else {
            continue;
        };
        if tree.suggested.contains(name) {
            continue; // most likely the misspelt use, reported already
        }
        ctx.error(span.clone(), format!("{} `{name}` is not used by any group", tree.what(id)))
            .label("never run")
            .help("list it in a group or remove it");
    }
}

/// Ids reachable from the root and the handlers, parents (and a group
/// before its `finally`) before children.
fn breadth_first(tree: &Tree, root: usize) -> Vec<usize> {
    let mut order = vec![root];
    order.extend(tree.handlers.iter().copied());
    let mut i = 0;
    while i < order.len() {
        let id = order[i];
        if tree.is_group(id) {
            let g = id - tree.n_steps;
            order.extend(tree.children[g].iter().copied());
            order.extend(tree.each[g]);
            order.extend(tree.finally[g]);
        }
        i += 1;
    }
    order
}

/// Refuses groups nested deeper than [`MAX_DEPTH`].
fn check_depth(ctx: &mut Ctx, tree: &Tree, order: &[usize]) -> bool {
    let mut depth = vec![0usize; tree.names.len()];
    for &id in order {
        // A finally runs a level below its group (the executor nests it so).
        if let Some(p) = tree.parent[id].or(tree.finally_of[id]) {
            depth[id] = depth[p] + 1;
        }
        if depth[id] > MAX_DEPTH {
            let span = tree.use_span[id].clone().unwrap_or(0..0);
            ctx.error(span, format!("groups are nested more than {MAX_DEPTH} deep"))
                .label("too deep")
                .help("flatten the groups: a `sequence` or `gather` may list many children");
            return false;
        }
    }
    true
}

/// Checks the template references of step `s` (see the module docs).
fn check_references(ctx: &mut Ctx, tree: &mut Tree, s: usize, raw: &RawStep) {
    let each_group = tree.each_of[s];
    let outcome = raw.uses.iter().any(|u| !u.steps.is_empty() || !u.outcome.is_empty()) && tree.in_outcome(s);
    for uses in &raw.uses {
        if !outcome && let Some((read, span)) = uses.outcome.first() {
            ctx.error(span.clone(), format!("`{read}` is only defined in a handler or a `finally`"))
                .label("not defined here")
                .help("how steps and the run ended is read after them: in `[handlers]` or a group's `finally`");
        }
        for (name, span) in &uses.steps {
            let Some(&t) = tree.by_name.get(name.as_str()) else {
                let help = tree.suggest(name).unwrap_or_else(|| {
                    "a template may use `steps.NAME.output` of a step or group of this job".to_string()
                });
                ctx.error(span.clone(), format!("no step or group is named `{name}`")).label("unknown name").help(help);
                continue;
            };
            check_reference(ctx, tree, s, each_group, t, span, outcome);
        }
        if let (Some(span), None) = (&uses.input, each_group) {
            ctx.error(span.clone(), "`input` is only defined in the `each` step of an as_completed group")
                .label("not defined here")
                .help("to use another step's result, write `{{ steps.NAME.output }}`");
        }
    }
}

/// Whether step `s` may read the result of `t`; reports why not.
/// In a handler or a `finally` (`outcome`), a node that may have failed is
/// fine to read; one that has not ended by then is not.
fn check_reference(
    ctx: &mut Ctx,
    tree: &Tree,
    s: usize,
    each_group: Option<usize>,
    t: usize,
    span: &Range<usize>,
    outcome: bool,
) {
    match reference_problem(tree, s, each_group, t) {
        // Inside a handler or a finally, a step that may have failed is
        // read for its status: its output is null then.
        Some(RefProblem::InRace { .. } | RefProblem::InFinally { .. } | RefProblem::MayHaveFailed { .. })
            if outcome => {}
        Some(problem) => problem.report(ctx, tree, s, t, span),
        None => {}
    }
}

/// Why step `s` may not read the result of `t`, or `None` when it may (the
/// rule is the module docs').
fn reference_problem(tree: &Tree, s: usize, each_group: Option<usize>, t: usize) -> Option<RefProblem> {
    if t == s {
        return Some(RefProblem::OwnOutput);
    }
    if let Some(group) = tree.each_of[t] {
        return Some(RefProblem::EachStep { group });
    }
    // An `each` step runs while its group runs: check as if it stood there.
    let pos = each_group.unwrap_or(s);
    if tree.is_ancestor_or_self(t, pos) {
        return Some(RefProblem::Contains { from_each: each_group.is_some() });
    }
    if let Some(group) = each_group.filter(|&g| tree.is_ancestor_or_self(g, t)) {
        return Some(RefProblem::ChildOfEach { group });
    }
    // Not in one tree: already reported as unused.
    let lca = tree.lca(pos, t)?;
    let direct = lca.a == pos && lca.b == t;
    match tree.mode(lca.node).unwrap_or(GroupMode::Sequence) {
        // With `on_error = "continue"` the sequence goes on after `t`'s
        // branch failed, so `t` may have no result when `s` starts.
        GroupMode::Sequence if tree.index[lca.b] < tree.index[lca.a] => {
            if tree.on_error(lca.node) == OnError::Continue {
                return Some(RefProblem::MayHaveFailed { lca, direct });
            }
        }
        GroupMode::Sequence if lca.node >= tree.hidden_from => return Some(RefProblem::RunsAfter { lca }),
        GroupMode::Sequence => return Some(RefProblem::LaterInSequence { lca, direct }),
        mode => return Some(RefProblem::Concurrent { lca, mode, direct }),
    }
    // Below the common sequence, a race may have cancelled `t`, and a
    // finally may have failed without failing its group.
    if let Some(race) = tree.race_between(t, lca.node) {
        return Some(RefProblem::InRace { race });
    }
    tree.finally_between(t, lca.node).map(|finally| RefProblem::InFinally { finally })
}

/// The lowest common ancestor of two nodes, and its children that hold each.
#[derive(Debug, Clone, Copy)]
struct Lca {
    /// The common ancestor.
    node: usize,
    /// Its child that is or holds the first node.
    a: usize,
    /// Its child that is or holds the second node.
    b: usize,
}

/// Why a step may not read a result: one variant per rule, so the wording
/// lives in [`RefProblem::report`] alone.
#[derive(Debug)]
enum RefProblem {
    /// The step reads itself.
    OwnOutput,
    /// The result is an `each` step's, which has one per child of `group`.
    EachStep { group: usize },
    /// The result's node contains the step (or its `each` group).
    Contains { from_each: bool },
    /// An `each` step reads a child of its own `group`.
    ChildOfEach { group: usize },
    /// The result comes later in the sequence `lca.node`; `direct` when the
    /// step and the result are themselves the sequence's children.
    LaterInSequence { lca: Lca, direct: bool },
    /// The result comes earlier in the sequence `lca.node`, which has
    /// `on_error = "continue"`: it goes on after a failure, so the result
    /// may not exist.
    MayHaveFailed { lca: Lca, direct: bool },
    /// The two run at once in a group of `mode`.
    Concurrent { lca: Lca, mode: GroupMode, direct: bool },
    /// The result is inside `race`, which may cancel it.
    InRace { race: usize },
    /// The result is in (or is) `finally`, whose failure fails nothing.
    InFinally { finally: usize },
    /// The result is in a handler or a `finally` that runs after the step
    /// (`lca` is a hidden sequence).
    RunsAfter { lca: Lca },
}

impl RefProblem {
    /// Reports the problem of step `s` reading `t` at `span`.
    fn report(&self, ctx: &mut Ctx, tree: &Tree, s: usize, t: usize, span: &Range<usize>) {
        let (sn, tn) = (tree.name(s), tree.name(t));
        let span = span.clone();
        match *self {
            RefProblem::OwnOutput => {
                ctx.error(span, format!("step `{sn}` cannot use its own output"))
                    .label("this step's own result")
                    .help("a step's result exists only after it finishes");
            }
            RefProblem::EachStep { group } => {
                let gn = tree.name(group);
                ctx.error(
                    span,
                    format!(
                        "`{tn}` is the `each` step of group `{gn}`: it runs once per result and has no single output"
                    ),
                )
                .label("no single result")
                .help(format!("use the group's result instead: `steps.{gn}.output`"));
            }
            RefProblem::Contains { from_each } => {
                let help = if from_each {
                    "in an `each` step, `{{ input }}` is the result of the child that just finished".to_string()
                } else {
                    format!(
                        "a step can only use results of steps that finished before it; `{tn}` finishes after `{sn}`"
                    )
                };
                ctx.error(span, format!("`{tn}` contains step `{sn}`, so it is still running when `{sn}` starts"))
                    .label("not finished yet")
                    .help(help);
            }
            RefProblem::ChildOfEach { group } => {
                ctx.error(
                    span,
                    format!("the `each` step `{sn}` cannot use the results of `{}`'s children", tree.name(group)),
                )
                .label("may not have finished yet")
                .help("`{{ input }}` is the result of the child that just finished");
            }
            RefProblem::LaterInSequence { lca, direct } => {
                let (ln, an, bn) = (tree.name(lca.node), tree.name(lca.a), tree.name(lca.b));
                let (message, help) = if direct {
                    (
                        format!("`{tn}` has not run yet when `{sn}` starts: it comes later in sequence `{ln}`"),
                        format!("move `{tn}` before `{sn}` in the list of `{ln}`"),
                    )
                } else {
                    (
                        format!(
                            "`{tn}` has not run yet when `{sn}` starts: `{bn}` comes after `{an}` in sequence `{ln}`"
                        ),
                        format!("move `{bn}` before `{an}` in the list of `{ln}`"),
                    )
                };
                ctx.error(span, message).label("runs later").help(help);
            }
            RefProblem::MayHaveFailed { lca, direct } => {
                let (ln, bn) = (tree.name(lca.node), tree.name(lca.b));
                let holder = if direct { String::new() } else { format!(" (in `{bn}`)") };
                ctx.error(
                    span,
                    format!("`{tn}` may have failed when `{sn}` starts: sequence `{ln}` has `on_error = \"continue\"`"),
                )
                .label("may have failed")
                .help(format!(
                    "`{ln}` goes on after a failed child, so `{tn}`{holder} may have no result; remove \
                     `on_error = \"continue\"` (then `{sn}` is skipped when `{bn}` fails), or do not read `{tn}` here"
                ));
            }
            RefProblem::Concurrent { lca, mode, direct } => {
                let (ln, an, bn) = (tree.name(lca.node), tree.name(lca.a), tree.name(lca.b));
                let how = mode.key();
                let detail = if direct {
                    format!("`{sn}` and `{tn}` run at the same time in {how} group `{ln}`")
                } else {
                    format!("`{an}` and `{bn}` run at the same time in {how} group `{ln}`")
                };
                ctx.error(span, format!("`{tn}` may not have finished when `{sn}` starts"))
                    .label("may still be running")
                    .help(format!("{detail}; to use its result, run them in a `sequence` group with `{bn}` first"));
            }
            RefProblem::InFinally { finally } => {
                let (fname, gname) = (tree.name(finally), tree.finally_of[finally].map_or("?", |g| tree.name(g)));
                let message = if finally == t {
                    format!("`{tn}` is the finally of group `{gname}`: it may have failed")
                } else {
                    format!("`{tn}` is in `{fname}`, the finally of group `{gname}`: it may have failed")
                };
                ctx.error(span, message)
                .label("may have failed")
                .help("a finally's failure does not fail its group; read it in a handler, or in another finally, where `steps.NAME.status` says how it ended");
            }
            RefProblem::RunsAfter { lca } => {
                let later = lca.b;
                let (message, help) = if tree.handlers.contains(&later) {
                    (
                        format!(
                            "`{tn}` has not run yet when `{sn}` starts: handler `{}` runs after it",
                            tree.name(later)
                        ),
                        "handlers run after the main tree, in the order on_failure, on_success, on_exit".to_string(),
                    )
                } else {
                    let g = tree.finally_of[later].map_or("?", |g| tree.name(g));
                    (
                        format!(
                            "`{tn}` has not run yet when `{sn}` starts: `{}` is the finally of group `{g}`, run once `{g}` is done",
                            tree.name(later)
                        ),
                        format!("read it after `{g}`, in a handler, or in the finally itself"),
                    )
                };
                ctx.error(span, message).label("runs later").help(help);
            }
            RefProblem::InRace { race } => {
                let rn = tree.name(race);
                ctx.error(span, format!("`{tn}` is inside race group `{rn}`: it may lose the race and be cancelled"))
                    .label("may have been cancelled")
                    .help(format!("use the race's result instead: `steps.{rn}.output`"));
            }
        }
    }
}
