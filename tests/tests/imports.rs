//! No crate of the workspace has an import circle (see `guirpc_tests::imports`, which
//! says what the check reads and what it cannot see).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use guirpc_tests::imports::{Crate, circles, display, read_crate, references_within};

/// Circles known and not yet removed: none. A circle is never to be added here; the list
/// exists so that a circle found while it is being removed can be named, and taken off.
const KNOWN: &[(&str, &str, &[&str])] = &[];

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
    let krate = planted(
        "none",
        &[
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
        ],
    );
    assert_eq!(circles(&krate), vec![]);

    // Now c reaches back to a: a -> b -> c -> a.
    let krate = planted(
        "three",
        &[
            ("lib.rs", "mod a; mod b; mod c;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            ("b.rs", "pub struct B; fn f() { let _ = crate::c::C; }"),
            ("c.rs", "pub struct C; fn g() { let _ = super::a::A; }"),
        ],
    );
    assert_eq!(
        circles(&krate),
        vec![(vec![], vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])]
    );

    // The way back only inside a macro's tokens, and through a module whose file is
    // named by `#[path]`.
    let krate = planted(
        "macro",
        &[
            ("lib.rs", "mod a; #[path = \"other.rs\"] mod b;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            (
                "other.rs",
                "pub struct B; fn f() { tokio::select! { _ = g() => crate::a::A } }",
            ),
        ],
    );
    assert_eq!(
        circles(&krate),
        vec![(vec![], vec!["a".to_owned(), "b".to_owned()])]
    );
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

/// The crate of `files` (path, source), written to a folder of its own and read back.
fn planted(name: &str, files: &[(&str, &str)]) -> Crate {
    let dir = std::env::temp_dir().join(format!("guirpc-imports-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (path, source) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    let krate = read_crate(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    krate
}
