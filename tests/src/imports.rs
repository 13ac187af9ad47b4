//! The import-circle check behind `tests/tests/imports.rs`: reads a crate's sources and
//! finds the modules that import one another in a circle.
//!
//! The modules of each crate import one another without circles, counting a folder and its
//! files as one module: a `mod.rs` and its own children may share items, but siblings
//! depend one way. The check reads the crates' sources (their `use` lines, paths written
//! out in code, and re-exports followed to where the item is defined), finds the strongly
//! connected modules at every level of each crate: there are none, and a new one fails
//! the check, naming the references that make it. Test modules (`#[cfg(test)]`) are left
//! out: they may reach anywhere. Inside a macro's tokens (`tokio::select!`, `format!`,
//! `macro_rules!` bodies), the paths that start with `crate`, `super`, `self` or
//! `$crate` are read; names brought in by a glob re-export (`pub use x::*`) are not
//! followed, and a method one module adds to another's type (`impl Other { .. }`) is
//! called without a path, so its callers' dependence on that module is not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use syn::visit::Visit;

pub type ModulePath = Vec<String>;

/// What a crate's modules refer to.
#[derive(Default)]
pub struct Crate {
    /// Every module, the root (`[]`) included.
    modules: BTreeSet<ModulePath>,
    /// The paths each module refers to, made absolute (crate-relative).
    refers: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
    /// Re-exported names: where each is defined.
    aliases: BTreeMap<ModulePath, ModulePath>,
}

/// A circle: the module it is in, and its members (children of that module), sorted.
pub type Circle = (ModulePath, Vec<String>);

/// `crate`, or `crate::a::b`.
pub fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        format!("crate::{}", module.join("::"))
    }
}

/// Reads every file of the crate whose sources are in `src`.
pub fn read_crate(src: &Path) -> Crate {
    let mut krate = Crate::default();
    let mut files = Vec::new();
    collect_files(src, src, &mut files);
    let mut parsed = Vec::new();
    for (module, path) in files {
        let source = std::fs::read_to_string(&path).unwrap();
        let file = syn::parse_file(&source)
            .unwrap_or_else(|err| panic!("cannot parse {}: {err}", path.display()));
        parsed.push((module, path, file));
    }
    // A module declared with `#[path = "..."]` is named by its declaration, not its file.
    let mut renamed = BTreeMap::new();
    for (module, path, file) in &parsed {
        for item in &file.items {
            if let syn::Item::Mod(declared) = item
                && declared.content.is_none()
                && let Some(target) = path_attribute(&declared.attrs)
            {
                let mut name = module.clone();
                name.push(declared.ident.to_string());
                renamed.insert(path.parent().unwrap().join(target), name);
            }
        }
    }
    for (module, path, _) in &mut parsed {
        if let Some(name) = renamed.get(path.as_path()) {
            *module = name.clone();
        }
    }
    // Every module first, so that a path can be told to start with one.
    for (module, _, file) in &parsed {
        krate.modules.insert(module.clone());
        inline_modules(&file.items, module, &mut krate.modules);
    }
    for (module, _, file) in &parsed {
        let mut visitor = References {
            krate: &mut krate,
            module: module.clone(),
        };
        visitor.visit_file(file);
    }
    krate
}

/// The file a `#[path = "..."]` attribute names.
fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        syn::Meta::NameValue(named) if named.path.is_ident("path") => match &named.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(text),
                ..
            }) => Some(text.value()),
            _ => None,
        },
        _ => None,
    })
}

/// The paths written in a macro's tokens that start with `crate`, `super`, `self` or
/// `$crate`: a macro's input is not parsed as code, so these are all it shows.
fn macro_paths(tokens: proc_macro2::TokenStream, paths: &mut Vec<Vec<String>>) {
    use proc_macro2::TokenTree;
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Group(group) => macro_paths(group.stream(), paths),
            TokenTree::Ident(first)
                if matches!(first.to_string().as_str(), "crate" | "super" | "self") =>
            {
                // `$crate` is a `$` and then `crate`: read as `crate`.
                let mut segments = vec![first.to_string()];
                let mut j = i + 1;
                loop {
                    let colons = matches!(
                        (&tokens.get(j), &tokens.get(j + 1)),
                        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                            if a.as_char() == ':' && b.as_char() == ':'
                    );
                    match tokens.get(j + 2) {
                        Some(TokenTree::Ident(next)) if colons => {
                            segments.push(next.to_string());
                            j += 3;
                        }
                        _ => break,
                    }
                }
                if segments.len() > 1 {
                    paths.push(segments);
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

fn collect_files(src: &Path, dir: &Path, files: &mut Vec<(ModulePath, std::path::PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_files(src, &path, files);
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap().with_extension("");
        let mut module: ModulePath = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        if module.first().is_some_and(|first| first == "bin") {
            // A binary is a crate of its own.
            continue;
        }
        files.push((module, path));
    }
}

fn inline_modules(items: &[syn::Item], module: &ModulePath, modules: &mut BTreeSet<ModulePath>) {
    for item in items {
        if let syn::Item::Mod(inner) = item
            && !is_test(&inner.attrs)
            && let Some((_, items)) = &inner.content
        {
            let mut path = module.clone();
            path.push(inner.ident.to_string());
            modules.insert(path.clone());
            inline_modules(items, &path, modules);
        }
    }
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// Collects what one file's modules refer to.
struct References<'k> {
    krate: &'k mut Crate,
    module: ModulePath,
}

impl References<'_> {
    /// `segments` as written in the current module, made crate-relative; `None` for a
    /// path into another crate (or a local name).
    fn absolute(&self, segments: &[String]) -> Option<ModulePath> {
        let first = segments.first()?;
        let mut path = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.clone(),
            "super" => {
                let mut path = self.module.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    path.pop();
                    rest = &rest[1..];
                }
                path.extend(rest.iter().cloned());
                return Some(path);
            }
            _ => {
                // A child module of this one, named directly.
                let mut child = self.module.clone();
                child.push(first.clone());
                if self.krate.modules.contains(&child) {
                    let mut path = self.module.clone();
                    path.extend(segments.iter().cloned());
                    return Some(path);
                }
                return None;
            }
        };
        path.extend(segments[1..].iter().cloned());
        Some(path)
    }

    fn refer(&mut self, path: ModulePath) {
        self.krate
            .refers
            .entry(self.module.clone())
            .or_default()
            .insert(path);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, public: bool) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree, public);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                prefix.push(name.ident.to_string());
                self.used(prefix, name.ident.to_string(), public);
                prefix.pop();
            }
            syn::UseTree::Rename(rename) => {
                prefix.push(rename.ident.to_string());
                self.used(prefix, rename.rename.to_string(), public);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                if let Some(path) = self.absolute(prefix) {
                    self.refer(path);
                }
            }
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree, public);
                }
            }
        }
    }

    fn used(&mut self, segments: &[String], name: String, public: bool) {
        let segments: Vec<String> = if segments.last().is_some_and(|s| s == "self") {
            segments[..segments.len() - 1].to_vec()
        } else {
            segments.to_vec()
        };
        let Some(path) = self.absolute(&segments) else {
            return;
        };
        if public {
            let mut alias = self.module.clone();
            alias.push(name);
            if alias != path {
                self.krate.aliases.insert(alias, path.clone());
            }
        }
        self.refer(path);
    }
}

impl<'ast> Visit<'ast> for References<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if is_test(&item.attrs) {
            return;
        }
        if let Some((_, items)) = &item.content {
            self.module.push(item.ident.to_string());
            for item in items {
                self.visit_item(item);
            }
            self.module.pop();
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_impl(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if is_test(&item.attrs) {
            return;
        }
        let public = !matches!(item.vis, syn::Visibility::Inherited);
        let mut prefix = Vec::new();
        if item.leading_colon.is_none() {
            self.use_tree(&mut prefix, &item.tree, public);
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let mut paths = Vec::new();
        macro_paths(mac.tokens.clone(), &mut paths);
        for segments in paths {
            if let Some(absolute) = self.absolute(&segments) {
                self.refer(absolute);
            }
        }
        syn::visit::visit_macro(self, mac);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            let segments: Vec<String> = path
                .segments
                .iter()
                .map(|segment| segment.ident.to_string())
                .collect();
            if let Some(absolute) = self.absolute(&segments) {
                self.refer(absolute);
            }
        }
        syn::visit::visit_path(self, path);
    }
}

impl Crate {
    /// The module `path` names (or an item of): re-exports followed, then the longest
    /// prefix that is a module.
    fn module_of(&self, path: &[String]) -> ModulePath {
        let mut path = path.to_vec();
        // Re-exports may chain; a bound keeps a cycle of them from looping.
        for _ in 0..16 {
            let alias = (1..=path.len())
                .rev()
                .find_map(|len| self.aliases.get(&path[..len]).map(|to| (len, to.clone())));
            match alias {
                Some((len, to)) => {
                    let mut resolved = to;
                    resolved.extend(path[len..].iter().cloned());
                    if resolved == path {
                        break;
                    }
                    path = resolved;
                }
                None => break,
            }
        }
        (0..=path.len())
            .rev()
            .map(|len| path[..len].to_vec())
            .find(|prefix| self.modules.contains(prefix))
            .unwrap_or_default()
    }
}

/// The references between the members of a circle in `module`: `from -> path`.
pub fn references_within(krate: &Crate, module: &[String], members: &[String]) -> Vec<String> {
    let member = |path: &[String]| {
        path.len() > module.len()
            && path[..module.len()] == *module
            && members.contains(&path[module.len()])
    };
    let mut lines = Vec::new();
    for (from, paths) in &krate.refers {
        if !member(from) {
            continue;
        }
        for path in paths {
            let to = krate.module_of(path);
            if member(&to) && to[module.len()] != from[module.len()] {
                lines.push(format!("  {} -> {}", display(from), display(path)));
            }
        }
    }
    lines
}

/// The circles of a crate, at every level.
pub fn circles(krate: &Crate) -> Vec<Circle> {
    // At each module, the edges between its children.
    let mut levels: BTreeMap<ModulePath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (from, paths) in &krate.refers {
        for path in paths {
            let to = krate.module_of(path);
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            // The same module, or one inside the other: a parent and its own children
            // may share items.
            if common == from.len() || common == to.len() {
                continue;
            }
            levels
                .entry(from[..common].to_vec())
                .or_default()
                .entry(from[common].clone())
                .or_default()
                .insert(to[common].clone());
        }
    }
    let mut circles = Vec::new();
    for (module, edges) in levels {
        for members in strongly_connected(&edges) {
            if members.len() > 1 {
                circles.push((module.clone(), members));
            }
        }
    }
    circles.sort();
    circles
}

/// Tarjan's strongly connected components, each sorted.
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'e> {
        edges: &'e BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'e str, usize>,
        low: BTreeMap<&'e str, usize>,
        stack: Vec<&'e str>,
        on_stack: BTreeSet<&'e str>,
        next: usize,
        components: Vec<Vec<String>>,
    }
    fn connect<'e>(state: &mut State<'e>, node: &'e str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        if let Some(targets) = state.edges.get(node) {
            for target in targets {
                let target = target.as_str();
                if !state.index.contains_key(target) {
                    connect(state, target);
                    let low = state.low[node].min(state.low[target]);
                    state.low.insert(node, low);
                } else if state.on_stack.contains(target) {
                    let low = state.low[node].min(state.index[target]);
                    state.low.insert(node, low);
                }
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        components: Vec::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            connect(&mut state, node);
        }
    }
    state.components
}
