//! The shape of src/, checked on every `cargo test` (issue 13, "One shape"):
//!
//! - module imports (`use crate::X`, `crate::X::` paths, macros included) only point down
//!   the layers in [`LAYERS`];
//! - no function in src/ is longer than [`MAX_FN_LINES`] lines, from `fn` to its closing
//!   brace;
//! - the decision core (src/admission/) takes no locks.
//!
//! Test-only code (`#[cfg(test)]` items and the files they include) is left out: a test of a
//! low module may build its input with a higher one, and a table-driven test may be long.
//!
//! What is wrong today is in [`KNOWN_VIOLATIONS`]; the test fails on anything new and on
//! every entry that no longer occurs, so the list can only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::Visit;

/// The layers, bottom to top. A module may use modules of lower layers, and modules of its
/// own layer as long as those uses form no cycle. `lib.rs` and `main.rs` are the top (they
/// wire everything) and are not listed.
const LAYERS: &[&[&str]] = &[
    &["text", "servicelinks", "manifest", "telemetry", "podshape"],
    &["reserved"],
    &["packs"],
    &["config"],
    &["catalog"],
    &["admission"],
    &["listing"],
    &["audit", "policy"],
    &["http"],
    &["cli"],
];

/// The longest function allowed in src/, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 100;

/// What the lock check looks for in src/admission/: lock types and crates, by name.
const LOCK_NAMES: &[&str] = &[
    "RwLock",
    "Mutex",
    "RwLockReadGuard",
    "RwLockWriteGuard",
    "MutexGuard",
    "parking_lot",
];

/// Violations that were there when this check was written, each as its stable key (line
/// counts and line numbers are printed, not part of the key, so that shortening a function
/// that is still too long does not churn this list).
///
/// This list must only shrink: remove an entry in the change that fixes it (the test fails
/// until you do); never add one.
const KNOWN_VIOLATIONS: &[&str] = &[];

#[test]
fn src_keeps_its_shape() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = source_files(&src);
    assert!(
        files.len() > 10,
        "found only {} files under {}",
        files.len(),
        src.display()
    );

    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut edges = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(&file.path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.path.display()));
        let shown = file.shown();
        let tokens: TokenStream = text
            .parse()
            .unwrap_or_else(|e| panic!("{shown} does not tokenize: {e:?}"));
        let tokens = without_test_items(tokens);
        for (target, line) in crate_paths(&tokens) {
            edges.push(Edge {
                from: file.module.clone(),
                to: target,
                at: format!("{shown}:{line}"),
            });
        }
        // A module missing from LAYERS would escape the layer check altogether.
        if file.module != "crate" && layer_of(&file.module).is_none() {
            found
                .entry(format!("module {} is in no layer of LAYERS", file.module))
                .or_default()
                .push(shown.to_string());
        }
        if file.module == "admission" {
            for (name, line) in locks(&tokens) {
                found
                    .entry(format!("lock {shown}: {name}"))
                    .or_default()
                    .push(format!("line {line}"));
            }
        }
        let syntax = syn::parse_file(&text).unwrap_or_else(|e| panic!("{shown}: {e}"));
        for (name, lines, line) in long_functions(&syntax) {
            found
                .entry(format!("fn {shown}::{name}"))
                .or_default()
                .push(format!(
                    "{lines} lines (line {line}; at most {MAX_FN_LINES})"
                ));
        }
    }
    for (key, detail) in layering(&edges) {
        found.entry(key).or_default().extend(detail);
    }

    report(&found);
}

/// Compares what was found with [`KNOWN_VIOLATIONS`] and fails, printing every difference.
fn report(found: &BTreeMap<String, Vec<String>>) {
    let known: BTreeSet<&str> = KNOWN_VIOLATIONS.iter().copied().collect();
    assert_eq!(
        known.len(),
        KNOWN_VIOLATIONS.len(),
        "KNOWN_VIOLATIONS lists an entry twice"
    );
    for (key, detail) in found {
        let mark = if known.contains(key.as_str()) {
            "known"
        } else {
            "NEW  "
        };
        eprintln!("{mark} {key:?}: {}", detail.join("; "));
    }
    let new: Vec<&String> = found
        .keys()
        .filter(|key| !known.contains(key.as_str()))
        .collect();
    let gone: Vec<&str> = known
        .iter()
        .copied()
        .filter(|key| !found.contains_key(*key))
        .collect();
    for key in &gone {
        eprintln!("FIXED {key:?}: remove it from KNOWN_VIOLATIONS");
    }
    assert!(
        new.is_empty() && gone.is_empty(),
        "src/ structure: {} new violation(s) {new:?}; {} entr(y/ies) of KNOWN_VIOLATIONS no \
         longer occur(s) {gone:?} (details above)",
        new.len(),
        gone.len()
    );
}

/// One .rs file of the crate.
struct SourceFile {
    /// The path on disk.
    path: PathBuf,
    /// The path from the crate root, `src/...`, with `/` separators.
    relative: String,
    /// The top-level module it belongs to (`admission` for src/admission/pod.rs), or
    /// `crate` for lib.rs and main.rs.
    module: String,
}

impl SourceFile {
    fn shown(&self) -> &str {
        &self.relative
    }
}

/// Every .rs file under `src`, sorted, except the ones only compiled for tests
/// (`#[cfg(test)] mod tests;` and the like).
fn source_files(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    paths.sort();
    let test_only = test_only_files(&paths);
    paths
        .into_iter()
        .filter(|path| !test_only.contains(path))
        .map(|path| {
            let inner = path
                .strip_prefix(src)
                .expect("walked from src")
                .to_path_buf();
            let parts: Vec<String> = inner
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let module = match parts.as_slice() {
                [file] if file == "lib.rs" || file == "main.rs" => "crate".to_string(),
                [file] => file.trim_end_matches(".rs").to_string(),
                [dir, ..] => dir.clone(),
                [] => unreachable!("a file has a name"),
            };
            SourceFile {
                relative: format!("src/{}", parts.join("/")),
                path,
                module,
            }
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The files that `#[cfg(test)] mod NAME;` declarations pull in.
fn test_only_files(paths: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for path in paths {
        let text = std::fs::read_to_string(path).expect("readable");
        let Ok(tokens) = text.parse::<TokenStream>() else {
            continue;
        };
        // A `mod` declared in lib.rs, main.rs or mod.rs lives beside it; one declared in
        // x.rs lives in x/.
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let dir = match file_name {
            "lib.rs" | "main.rs" | "mod.rs" => path.parent().expect("in src").to_path_buf(),
            _ => path.with_extension(""),
        };
        for name in test_modules(&tokens) {
            test_only.insert(dir.join(format!("{name}.rs")));
            test_only.insert(dir.join(&name).join("mod.rs"));
        }
    }
    test_only
}

/// Names of the out-of-line modules declared under `#[cfg(test)]` at the top of a file.
fn test_modules(tokens: &TokenStream) -> Vec<String> {
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < trees.len() {
        if is_cfg_test(&trees, i) {
            let end = item_end(&trees, i + 2);
            let item = &trees[i + 2..end];
            let words: Vec<String> = item
                .iter()
                .filter_map(|t| match t {
                    TokenTree::Ident(ident) => Some(ident.to_string()),
                    _ => None,
                })
                .collect();
            let declares_file =
                matches!(item.last(), Some(TokenTree::Punct(p)) if p.as_char() == ';');
            if declares_file && let Some(at) = words.iter().position(|w| w == "mod") {
                names.extend(words.get(at + 1).cloned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Whether `trees[i..]` starts with the attribute `#[cfg(test)]`.
fn is_cfg_test(trees: &[TokenTree], i: usize) -> bool {
    let (Some(TokenTree::Punct(hash)), Some(TokenTree::Group(group))) =
        (trees.get(i), trees.get(i + 1))
    else {
        return false;
    };
    if hash.as_char() != '#' || group.delimiter() != Delimiter::Bracket {
        return false;
    }
    let text: String = group.stream().to_string().split_whitespace().collect();
    text == "cfg(test)"
}

/// Index just past the item that starts at `start`: past its `{ ... }` body or its `;`,
/// whichever comes first (further attributes on the item are skipped over with it).
fn item_end(trees: &[TokenTree], start: usize) -> usize {
    let mut i = start;
    while i < trees.len() {
        match &trees[i] {
            TokenTree::Group(g) if g.delimiter() == Delimiter::Brace => return i + 1,
            TokenTree::Punct(p) if p.as_char() == ';' => return i + 1,
            // `#[...]` of a following attribute: not the item's end.
            _ => i += 1,
        }
    }
    i
}

/// The token stream without its `#[cfg(test)]` items, at every depth.
fn without_test_items(tokens: TokenStream) -> TokenStream {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut kept = Vec::with_capacity(trees.len());
    let mut i = 0;
    while i < trees.len() {
        if is_cfg_test(&trees, i) {
            i = item_end(&trees, i + 2);
            continue;
        }
        kept.push(match &trees[i] {
            TokenTree::Group(group) => {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), without_test_items(group.stream()));
                inner.set_span(group.span());
                TokenTree::Group(inner)
            }
            other => other.clone(),
        });
        i += 1;
    }
    kept.into_iter().collect()
}

/// Every `crate::X` in the tokens (use trees, paths, macro arguments): the top-level module
/// `X` and the line. `crate::{a, b::c}` yields `a` and `b`.
fn crate_paths(tokens: &TokenStream) -> Vec<(String, usize)> {
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    let mut found = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => found.extend(crate_paths(&group.stream())),
            TokenTree::Ident(ident) if *ident == "crate" && is_path_sep(&trees, i + 1) => {
                let line = ident.span().start().line;
                match trees.get(i + 3) {
                    Some(TokenTree::Ident(next)) => found.push((next.to_string(), line)),
                    Some(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => {
                        found.extend(
                            use_group_heads(&group.stream())
                                .into_iter()
                                .map(|m| (m, line)),
                        );
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    found
}

/// Whether `trees[i..]` starts with `::`.
fn is_path_sep(trees: &[TokenTree], i: usize) -> bool {
    matches!(
        (trees.get(i), trees.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

/// The first name of each comma-separated element of a use group (`{a, b::c, self}`).
fn use_group_heads(tokens: &TokenStream) -> Vec<String> {
    let mut heads = Vec::new();
    let mut at_start = true;
    for tree in tokens.clone() {
        match tree {
            TokenTree::Punct(p) if p.as_char() == ',' => at_start = true,
            TokenTree::Ident(ident) if at_start => {
                let name = ident.to_string();
                if name != "self" {
                    heads.push(name);
                }
                at_start = false;
            }
            _ => at_start = false,
        }
    }
    heads
}

/// Lock types and lock calls (`.read()`, `.write()`, `.lock()`) in the tokens, with lines.
fn locks(tokens: &TokenStream) -> Vec<(String, usize)> {
    let trees: Vec<TokenTree> = tokens.clone().into_iter().collect();
    let mut found = Vec::new();
    for (i, tree) in trees.iter().enumerate() {
        match tree {
            TokenTree::Group(group) => found.extend(locks(&group.stream())),
            TokenTree::Ident(ident) => {
                let name = ident.to_string();
                let line = ident.span().start().line;
                if LOCK_NAMES.contains(&name.as_str()) {
                    found.push((name, line));
                    continue;
                }
                let after_dot =
                    i > 0 && matches!(&trees[i - 1], TokenTree::Punct(p) if p.as_char() == '.');
                let empty_call = matches!(
                    trees.get(i + 1),
                    Some(TokenTree::Group(g))
                        if g.delimiter() == Delimiter::Parenthesis && g.stream().is_empty()
                );
                if after_dot && empty_call && matches!(name.as_str(), "read" | "write" | "lock") {
                    found.push((format!(".{name}()"), line));
                }
            }
            _ => {}
        }
    }
    found
}

/// Functions longer than [`MAX_FN_LINES`], outside `#[cfg(test)]` code: name (`Type::name`
/// for methods), length in lines, first line.
fn long_functions(file: &syn::File) -> Vec<(String, usize, usize)> {
    let mut finder = LongFunctions::default();
    finder.visit_file(file);
    finder.found
}

#[derive(Default)]
struct LongFunctions {
    /// The `impl` or `trait` being visited, to name its methods.
    owner: Vec<String>,
    found: Vec<(String, usize, usize)>,
}

impl LongFunctions {
    fn check(&mut self, name: &syn::Ident, first: proc_macro2::Span, block: &syn::Block) {
        let start = first.start().line;
        let end = block.brace_token.span.close().end().line;
        let lines = end + 1 - start;
        if lines > MAX_FN_LINES {
            let name = match self.owner.last() {
                Some(owner) => format!("{owner}::{name}"),
                None => name.to_string(),
            };
            self.found.push((name, lines, start));
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("test")
            || (attr.path().is_ident("cfg")
                && attr
                    .parse_args::<syn::Ident>()
                    .is_ok_and(|ident| ident == "test"))
    })
}

impl<'ast> Visit<'ast> for LongFunctions {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if is_test_only(&item.attrs) {
            return;
        }
        self.check(&item.sig.ident, item.sig.fn_token.span(), &item.block);
        // Free functions inside are named on their own, not as methods of the outer impl.
        let owners = std::mem::take(&mut self.owner);
        syn::visit::visit_item_fn(self, item);
        self.owner = owners;
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if is_test_only(&item.attrs) {
            return;
        }
        let ty = &item.self_ty;
        let owner = match &**ty {
            syn::Type::Path(path) => path
                .path
                .segments
                .last()
                .map(|s| s.ident.to_string())
                .unwrap_or_else(|| "impl".to_string()),
            _ => "impl".to_string(),
        };
        self.owner.push(owner);
        syn::visit::visit_item_impl(self, item);
        self.owner.pop();
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if is_test_only(&item.attrs) {
            return;
        }
        self.check(&item.sig.ident, item.sig.fn_token.span(), &item.block);
        syn::visit::visit_impl_item_fn(self, item);
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        self.owner.push(item.ident.to_string());
        syn::visit::visit_item_trait(self, item);
        self.owner.pop();
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.check(&item.sig.ident, item.sig.fn_token.span(), block);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }
}

/// One `crate::X` use: from which top-level module, to which, where.
struct Edge {
    from: String,
    to: String,
    at: String,
}

/// The layer of a top-level module, or `None` for the crate root and unknown names (a
/// `crate::X` that is no module, such as a re-exported item at the root, is not an import
/// between modules).
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Violations of the layer order: `import FROM -> TO` for each use of a higher layer, and for
/// each use within a layer whose modules use each other in a cycle.
fn layering(edges: &[Edge]) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut same_layer: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for edge in edges {
        if edge.from == edge.to {
            continue;
        }
        let from = layer_of(&edge.from);
        let to = layer_of(&edge.to);
        match (from, to) {
            (Some(from), Some(to)) if to > from => found
                .entry(format!("import {} -> {}", edge.from, edge.to))
                .or_default()
                .push(edge.at.clone()),
            (Some(from), Some(to)) if to == from => same_layer
                .entry((edge.from.clone(), edge.to.clone()))
                .or_default()
                .push(edge.at.clone()),
            // Down a layer, from the crate root, or to a name that is no module.
            _ => {}
        }
    }
    for ((from, to), at) in &same_layer {
        if reaches(&same_layer, to, from) {
            found
                .entry(format!("import {from} -> {to} (cycle within a layer)"))
                .or_default()
                .extend(at.iter().cloned());
        }
    }
    found
}

/// Whether `to` can be reached from `from` along the same-layer edges.
fn reaches(edges: &BTreeMap<(String, String), Vec<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(module) = stack.pop() {
        if module == to {
            return true;
        }
        if seen.insert(module.clone()) {
            stack.extend(
                edges
                    .keys()
                    .filter(|(a, _)| *a == module)
                    .map(|(_, b)| b.clone()),
            );
        }
    }
    false
}

#[test]
fn the_scanners_see_what_they_should() {
    let code = r#"
        use crate::{catalog::Catalog, text, self};
        use crate::config::Policy;
        fn f() { tracing::info!("{}", crate::packs::X); let _ = lock.read(); }
        #[cfg(test)]
        mod tests { use crate::cli::Y; fn g() { m.lock(); } }
        #[cfg(test)]
        mod other;
    "#;
    let tokens: TokenStream = code.parse().expect("tokenizes");
    assert_eq!(test_modules(&tokens), ["other"]);
    let kept = without_test_items(tokens);
    let modules: Vec<String> = crate_paths(&kept).into_iter().map(|(m, _)| m).collect();
    assert_eq!(modules, ["catalog", "text", "config", "packs"]);
    let locks: Vec<String> = locks(&kept).into_iter().map(|(l, _)| l).collect();
    assert_eq!(locks, [".read()"]);

    let long = format!(
        "impl S {{\n fn big() {{\n{}}}\n}}\nfn ok() {{}}\n",
        "x();\n".repeat(99)
    );
    let file = syn::parse_file(&long).expect("parses");
    assert_eq!(long_functions(&file), [("S::big".to_string(), 101, 2)]);

    let edges = |pairs: &[(&str, &str)]| -> Vec<Edge> {
        pairs
            .iter()
            .map(|(from, to)| Edge {
                from: from.to_string(),
                to: to.to_string(),
                at: "x".to_string(),
            })
            .collect()
    };
    let down = layering(&edges(&[
        ("cli", "http"),
        ("text", "manifest"),
        ("crate", "cli"),
    ]));
    assert!(down.is_empty(), "{down:?}");
    let bad = layering(&edges(&[
        ("reserved", "catalog"),
        ("text", "manifest"),
        ("manifest", "text"),
    ]));
    let keys: Vec<&String> = bad.keys().collect();
    assert_eq!(
        keys,
        [
            "import manifest -> text (cycle within a layer)",
            "import reserved -> catalog",
            "import text -> manifest (cycle within a layer)",
        ]
    );
}
