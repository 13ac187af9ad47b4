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

/// Circles known and not yet removed: none. A circle is never to be added here; the list
/// exists so that a circle found while it is being removed can be named, and taken off.
const KNOWN: &[(&str, &str, &[&str])] = &[];

type ModulePath = Vec<String>;

/// What a crate's modules refer to.
#[derive(Default)]
struct Crate {
    /// Every module, the root (`[]`) included.
    modules: BTreeSet<ModulePath>,
    /// The paths each module refers to, made absolute (crate-relative).
    refers: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
    /// Re-exported names: where each is defined.
    aliases: BTreeMap<ModulePath, ModulePath>,
}

/// A circle: the module it is in, and its members (children of that module), sorted.
type Circle = (ModulePath, Vec<String>);

#[test]
fn no_crate_has_an_import_circle_but_the_known_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = BTreeSet::new();
    let mut why = BTreeMap::new();
    for name in ["guirpc-core", "guirpc-cli", "guirpc-macros"] {
        let krate = read_crate(&root.join(name).join("src"));
        for (module, members) in circles(&krate) {
            let circle = (name.to_owned(), display(&module), members);
            why.insert(
                circle.clone(),
                references_within(&krate, &module, &circle.2),
            );
            found.insert(circle);
        }
    }
    let known: BTreeSet<_> = KNOWN
        .iter()
        .map(|(name, module, members)| {
            (
                (*name).to_owned(),
                (*module).to_owned(),
                members.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>(),
            )
        })
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    let because: Vec<String> = new
        .iter()
        .map(|circle| format!("{} {}:\n{}", circle.0, circle.1, why[*circle].join("\n")))
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "import circles changed.\nnew (remove them):\n{}\ngone (take them off KNOWN):\n{}\n\nthe references that make the new ones:\n{}",
        listing(&new),
        listing(&gone),
        because.join("\n")
    );
}

#[test]
fn planted_circles_are_found_in_code_and_macros_and_a_parent_sharing_with_its_children_is_not() {
    let dir = std::env::temp_dir().join(format!("guirpc-imports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = [
        ("lib.rs", "mod a; mod b; mod c; mod d; pub use d::Thing;"),
        ("a.rs", "use crate::b::B; pub struct A;"),
        // Written out in code, not imported: found too.
        ("b.rs", "pub struct B; fn f() { let _ = crate::c::C; }"),
        // Through the root's re-export of `d::Thing`.
        ("c.rs", "pub struct C; fn g() -> crate::Thing { todo!() }"),
        (
            "d/mod.rs",
            "mod inner; pub struct Thing; fn h() { inner::go() }",
        ),
        ("d/inner.rs", "use super::Thing; pub fn go() {}"),
        // A circle in a test module does not count.
        ("e.rs", "#[cfg(test)] mod tests { use crate::a::A; }"),
    ];
    for (path, source) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    let krate = read_crate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(circles(&krate), vec![]);

    // Now c reaches back to a: a -> b -> c -> a.
    let dir = std::env::temp_dir().join(format!("guirpc-imports-2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (path, source) in [
        ("lib.rs", "mod a; mod b; mod c;"),
        ("a.rs", "use crate::b::B; pub struct A;"),
        ("b.rs", "pub struct B; fn f() { let _ = crate::c::C; }"),
        ("c.rs", "pub struct C; fn g() { let _ = super::a::A; }"),
    ] {
        std::fs::write(dir.join(path), source).unwrap();
    }
    let krate = read_crate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        circles(&krate),
        vec![(vec![], vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])]
    );

    // The way back only inside a macro's tokens, and through a module whose file is
    // named by `#[path]`.
    let dir = std::env::temp_dir().join(format!("guirpc-imports-3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (path, source) in [
        ("lib.rs", "mod a; #[path = \"other.rs\"] mod b;"),
        ("a.rs", "use crate::b::B; pub struct A;"),
        (
            "other.rs",
            "pub struct B; fn f() { tokio::select! { _ = g() => crate::a::A } }",
        ),
    ] {
        std::fs::write(dir.join(path), source).unwrap();
    }
    let krate = read_crate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        circles(&krate),
        vec![(vec![], vec!["a".to_owned(), "b".to_owned()])]
    );
}

fn display(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        format!("crate::{}", module.join("::"))
    }
}

fn listing(circles: &[&(String, String, Vec<String>)]) -> String {
    let lines: Vec<_> = circles
        .iter()
        .map(|(name, module, members)| format!("  (\"{name}\", \"{module}\", &{members:?}),"))
        .collect();
    if lines.is_empty() {
        "  none".to_owned()
    } else {
        lines.join("\n")
    }
}

/// Reads every file of the crate whose sources are in `src`.
fn read_crate(src: &Path) -> Crate {
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
fn references_within(krate: &Crate, module: &[String], members: &[String]) -> Vec<String> {
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
fn circles(krate: &Crate) -> Vec<Circle> {
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
