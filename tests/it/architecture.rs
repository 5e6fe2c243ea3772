//! The code's shape (ARCHITECTURE.md "Shape"), checked by parsing every `src/**/*.rs` file:
//!
//! 1. no import cycle between source files: a file depends on the files that define what its
//!    `crate::…`, `super::…`, `self::…` and child-module paths name (in `use` items, in code and in
//!    macro calls), through `pub use` re-exports to the file that defines the item. A parent
//!    declaring `mod child` or re-exporting its own descendants (`pub use child::X`) is the
//!    module's outline, not an import. `#[cfg(test)]` code is left out;
//! 2. no source file over [`MAX_FILE_LINES`] lines before its `#[cfg(test)]` module;
//! 3. no function over [`MAX_FN_LINES`] lines (from `fn` to its closing brace).
//!
//! What remains is listed in [`ALLOWED`], each with its reason. An entry that no longer matches
//! anything fails the test as well, so the list only shrinks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use syn::spanned::Spanned;
use syn::visit::Visit;

const MAX_FILE_LINES: usize = 650;
const MAX_FN_LINES: usize = 80;

/// A known exception to one rule.
enum Exception {
    /// Files that form an import cycle (exactly this set, as a strongly connected component).
    /// None is allowed today; the variant stays for one that must wait, with its reason.
    #[allow(dead_code)]
    Cycle(&'static [&'static str]),
    /// A function over [`MAX_FN_LINES`]: `file`, `Type::name` or `name`.
    LongFn(&'static str, &'static str),
}

/// The known exceptions, each with the reason it is still here.
const ALLOWED: &[(Exception, &str)] = &[
    // Functions over the limit.
    (
        Exception::LongFn("src/cli/client.rs", "summary"),
        "the typed client's users in cli",
    ),
    (
        Exception::LongFn("src/config/agent.rs", "AgentConfig::validate"),
        "one check per setting in a row; not split yet",
    ),
    (
        Exception::LongFn("src/manifest/mod.rs", "Manifest::validate"),
        "one check per rule of the format in a row; not split yet",
    ),
    (
        Exception::LongFn("src/manifest/walk.rs", "Walker::visit"),
        "one match over the kinds of directory entry; not split yet",
    ),
];

#[test]
fn no_import_cycles_long_files_or_long_functions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tree = SourceTree::load(root);
    let mut problems = Vec::new();
    let mut used = vec![false; ALLOWED.len()];
    let mut allowed = |what: &dyn Fn(&Exception) -> bool| -> bool {
        match ALLOWED.iter().position(|(e, _)| what(e)) {
            Some(i) => {
                used[i] = true;
                true
            }
            None => false,
        }
    };

    for cycle in tree.cycles() {
        let files: BTreeSet<&str> = cycle.iter().map(|&i| tree.files[i].rel.as_str()).collect();
        let known = allowed(
            &|e| matches!(e, Exception::Cycle(set) if set.iter().copied().collect::<BTreeSet<_>>() == files),
        );
        if known {
            continue;
        }
        let mut s = format!(
            "import cycle between {} files: {}\n",
            files.len(),
            files.iter().copied().collect::<Vec<_>>().join(", ")
        );
        for e in tree
            .edges
            .iter()
            .filter(|e| cycle.contains(&e.from) && cycle.contains(&e.to))
        {
            let _ = writeln!(
                s,
                "    {}:{}: uses {} ({})",
                tree.files[e.from].rel, e.line, tree.files[e.to].rel, e.what
            );
        }
        problems.push(s);
    }

    for f in tree.files.iter().filter(|f| !f.test_only) {
        if f.lines_before_tests > MAX_FILE_LINES {
            problems.push(format!(
                "{}:1: {} lines before its tests (at most {MAX_FILE_LINES})",
                f.rel, f.lines_before_tests
            ));
        }
        for func in &f.functions {
            let len = func.end - func.start + 1;
            if len > MAX_FN_LINES
                && !allowed(
                    &|e| matches!(e, Exception::LongFn(p, n) if *p == f.rel && *n == func.name),
                )
            {
                problems.push(format!(
                    "{}:{}: fn {} is {len} lines (at most {MAX_FN_LINES})",
                    f.rel, func.start, func.name
                ));
            }
        }
    }

    for (i, (e, reason)) in ALLOWED.iter().enumerate() {
        if !used[i] {
            let what = match e {
                Exception::Cycle(files) => format!("the cycle {files:?}"),
                Exception::LongFn(p, n) => format!("the long fn {p}: {n}"),
            };
            problems.push(format!(
                "ALLOWED lists {what} ({reason}), which is no longer there: remove the entry"
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) with the code's shape (see tests/it/architecture.rs):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checker must see what it is meant to see: a cycle through a `use`, through a path in
/// code and through a macro call; a facade's `pub use` is not an import.
#[test]
fn the_checker_finds_cycles_through_uses_code_and_macros_but_not_facades() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    let files = [
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
        (
            "a/mod.rs",
            "pub mod x;\npub mod y;\nmod z;\npub use x::X;\npub fn top() { z::z() }\n",
        ),
        // A visibility restricted to the parent names it but uses nothing of it.
        ("a/z.rs", "pub(super) fn z() {}\n"),
        ("a/x.rs", "pub struct X;\nfn f() { super::y::g(); }\n"),
        (
            "a/y.rs",
            "pub fn g() { tracing::info!(\"{}\", crate::a::X::new()); }\n",
        ),
        ("b.rs", "use crate::c::C;\npub struct B;\n"),
        ("c.rs", "pub struct C;\nfn f() -> crate::b::B { todo!() }\n"),
    ];
    for (p, text) in files {
        std::fs::write(src.join(p), text).unwrap();
    }
    let long = format!(
        "pub fn long() {{\n{}}}\n",
        "    let _ = 1;\n".repeat(MAX_FN_LINES)
    );
    std::fs::write(src.join("d.rs"), long).unwrap();

    let tree = SourceTree::load(dir.path());
    let cycles: BTreeSet<Vec<&str>> = tree
        .cycles()
        .iter()
        .map(|c| {
            let mut v: Vec<&str> = c.iter().map(|&i| tree.files[i].rel.as_str()).collect();
            v.sort();
            v
        })
        .collect();
    // a/x.rs → a/y.rs (code), a/y.rs → a/x.rs (a macro, through the facade's re-export);
    // b.rs → c.rs (use), c.rs → b.rs (a type in code). a/mod.rs's `pub use x::X` is no edge.
    assert_eq!(
        cycles,
        BTreeSet::from([
            vec!["src/a/x.rs", "src/a/y.rs"],
            vec!["src/b.rs", "src/c.rs"]
        ])
    );
    let d = tree.files.iter().find(|f| f.rel == "src/d.rs").unwrap();
    assert_eq!(
        d.functions[0].end - d.functions[0].start + 1,
        MAX_FN_LINES + 2
    );
}

// ---------------------------------------------------------------------------------------------

struct Function {
    name: String,
    start: usize,
    end: usize,
}

struct SourceFile {
    /// `src/…/x.rs`, from the package root.
    rel: String,
    /// `crate::a::b` as `["a", "b"]`.
    module: Vec<String>,
    ast: syn::File,
    /// Included only under `#[cfg(test)]` (e.g. `#[cfg(test)] #[path = "…"] mod tests;`).
    test_only: bool,
    lines_before_tests: usize,
    functions: Vec<Function>,
}

/// One file's use of another.
struct Edge {
    from: usize,
    to: usize,
    line: usize,
    what: String,
}

struct SourceTree {
    files: Vec<SourceFile>,
    by_module: BTreeMap<Vec<String>, usize>,
    /// `pub use` re-exports: the name a module offers → the absolute path it stands for.
    reexports: BTreeMap<Vec<String>, Vec<String>>,
    edges: Vec<Edge>,
}

impl SourceTree {
    fn load(root: &Path) -> Self {
        let src = root.join("src");
        let mut paths = Vec::new();
        collect_rs(&src, &mut paths);
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("src/bin/") {
                continue; // crate roots of their own: they use the library by its name
            }
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let ast = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{rel}:{}: {e}", e.span().start().line));
            let module = module_of(p.strip_prefix(&src).unwrap());
            let first_test_mod = ast.items.iter().find_map(|i| match i {
                syn::Item::Mod(m) if is_cfg_test(&m.attrs) => Some(m.attrs[0].span().start().line),
                _ => None,
            });
            let lines_before_tests = match first_test_mod {
                Some(line) => line - 1,
                None => text.lines().count(),
            };
            files.push(SourceFile {
                rel,
                module,
                ast,
                test_only: false,
                lines_before_tests,
                functions: Vec::new(),
            });
        }
        let by_module: BTreeMap<Vec<String>, usize> = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut tree = SourceTree {
            files,
            by_module,
            reexports: BTreeMap::new(),
            edges: Vec::new(),
        };
        tree.mark_test_only(root);
        tree.collect_reexports();
        tree.collect_edges_and_functions();
        tree
    }

    /// Files reached only through a `#[cfg(test)] mod x;`.
    fn mark_test_only(&mut self, root: &Path) {
        let mut test_files = Vec::new();
        for f in &self.files {
            for item in &f.ast.items {
                let syn::Item::Mod(m) = item else { continue };
                if m.content.is_some() || !is_cfg_test(&m.attrs) {
                    continue;
                }
                let by_path = m.attrs.iter().find_map(|a| match &a.meta {
                    syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) => Some(s.value()),
                        _ => None,
                    },
                    _ => None,
                });
                let target = match by_path {
                    Some(p) => {
                        let dir = root.join(&f.rel);
                        let file = dir.parent().unwrap().join(p);
                        let rel = file
                            .strip_prefix(root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned();
                        self.files.iter().position(|g| g.rel == rel)
                    }
                    None => {
                        let mut m2 = f.module.clone();
                        m2.push(m.ident.to_string());
                        self.by_module.get(&m2).copied()
                    }
                };
                test_files.extend(target);
            }
        }
        for i in test_files {
            self.files[i].test_only = true;
        }
    }

    fn collect_reexports(&mut self) {
        let mut out = BTreeMap::new();
        for f in self.files.iter().filter(|f| !f.test_only) {
            for item in &f.ast.items {
                let syn::Item::Use(u) = item else { continue };
                if matches!(u.vis, syn::Visibility::Inherited) || is_cfg_test(&u.attrs) {
                    continue;
                }
                let mut leaves = Vec::new();
                flatten_use(&u.tree, &mut Vec::new(), &mut leaves);
                for leaf in leaves {
                    let (Some(name), Some(abs)) = (leaf.name, self.absolute(&f.module, &leaf.path))
                    else {
                        continue;
                    };
                    let mut key = f.module.clone();
                    key.push(name);
                    out.insert(key, abs);
                }
            }
        }
        self.reexports = out;
    }

    fn collect_edges_and_functions(&mut self) {
        let mut edges = Vec::new();
        for i in 0..self.files.len() {
            if self.files[i].test_only {
                continue;
            }
            let mut c = Collector {
                inline: Vec::new(),
                names: Vec::new(),
                uses: Vec::new(),
                functions: Vec::new(),
            };
            c.visit_file(&self.files[i].ast);
            for u in c.uses {
                let mut module = self.files[i].module.clone();
                module.extend(u.inline.iter().cloned());
                let Some(abs) = self.absolute(&module, &u.path) else {
                    continue;
                };
                let Some(to) = self.file_of(abs.clone()) else {
                    continue;
                };
                let facade = u.public_use && self.files[to].module.starts_with(&module);
                if to != i && !facade {
                    edges.push(Edge {
                        from: i,
                        to,
                        line: u.line,
                        what: format!("crate::{}", abs.join("::")),
                    });
                }
            }
            self.files[i].functions = c.functions;
        }
        self.edges = edges;
    }

    /// A path as written in `module` → its absolute path, or `None` for another crate's.
    fn absolute(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?;
        let mut cur = module.to_vec();
        let rest = match first.as_str() {
            "crate" => {
                cur.clear();
                &path[1..]
            }
            "self" => &path[1..],
            "super" => {
                let supers = path.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    cur.pop()?;
                }
                &path[supers..]
            }
            _ => {
                let mut child = cur.clone();
                child.push(first.clone());
                if !self.by_module.contains_key(&child) || path.len() < 2 {
                    return None;
                }
                path
            }
        };
        cur.extend(rest.iter().cloned());
        Some(cur)
    }

    /// The file that defines what an absolute path names, following `pub use` re-exports.
    fn file_of(&self, mut abs: Vec<String>) -> Option<usize> {
        for _ in 0..16 {
            let k = (0..=abs.len())
                .rev()
                .find(|&k| self.by_module.contains_key(&abs[..k]))?;
            if k < abs.len() {
                if let Some(target) = self.reexports.get(&abs[..=k]) {
                    let mut next = target.clone();
                    next.extend(abs[k + 1..].iter().cloned());
                    if next != abs {
                        abs = next;
                        continue;
                    }
                }
            }
            return self.by_module.get(&abs[..k]).copied();
        }
        None
    }

    /// The strongly connected components with more than one file (Tarjan).
    fn cycles(&self) -> Vec<Vec<usize>> {
        let n = self.files.len();
        let mut adj = vec![BTreeSet::new(); n];
        for e in &self.edges {
            adj[e.from].insert(e.to);
        }
        struct T<'a> {
            adj: &'a [BTreeSet<usize>],
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn strong(t: &mut T, v: usize) {
            t.index[v] = Some(t.next);
            t.low[v] = t.next;
            t.next += 1;
            t.stack.push(v);
            t.on[v] = true;
            for &w in t.adj[v].iter() {
                match t.index[w] {
                    None => {
                        strong(t, w);
                        t.low[v] = t.low[v].min(t.low[w]);
                    }
                    Some(iw) if t.on[w] => t.low[v] = t.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(t.low[v]) == t.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = t.stack.pop() {
                    t.on[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort_unstable();
                    t.out.push(comp);
                }
            }
        }
        let mut t = T {
            adj: &adj,
            index: vec![None; n],
            low: vec![0; n],
            on: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if t.index[v].is_none() {
                strong(&mut t, v);
            }
        }
        t.out
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` → `["a", "b"]`; `lib.rs` → `[]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") || parts == ["lib"] {
        parts.pop();
    }
    parts
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && matches!(&a.meta, syn::Meta::List(l) if l.tokens.to_string() == "test")
    })
}

struct UseLeaf {
    path: Vec<String>,
    /// The name it brings into scope (`None` for a glob).
    name: Option<String>,
}

fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<UseLeaf>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            let mut path = prefix.clone();
            if name != "self" {
                path.push(name.clone());
            }
            let name = if name == "self" {
                prefix.last().cloned()
            } else {
                Some(name)
            };
            out.push(UseLeaf { path, name });
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            if r.ident != "self" {
                path.push(r.ident.to_string());
            }
            out.push(UseLeaf {
                path,
                name: Some(r.rename.to_string()),
            });
        }
        syn::UseTree::Glob(_) => out.push(UseLeaf {
            path: prefix.clone(),
            name: None,
        }),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, out);
            }
        }
    }
}

/// A path one file names, with where.
struct Use {
    inline: Vec<String>,
    path: Vec<String>,
    line: usize,
    public_use: bool,
}

struct Collector {
    /// Inline modules around the current item.
    inline: Vec<String>,
    /// Impl types and functions around the current item, for function names.
    names: Vec<String>,
    uses: Vec<Use>,
    functions: Vec<Function>,
}

impl Collector {
    fn function(&mut self, name: &syn::Ident, start: usize, block: &syn::Block) {
        let end = block.brace_token.span.close().start().line;
        let mut full = self.names.clone();
        full.push(name.to_string());
        self.functions.push(Function {
            name: full.join("::"),
            start,
            end,
        });
    }

    fn push(&mut self, path: Vec<String>, line: usize, public_use: bool) {
        if path.len() >= 2 || path.first().is_some_and(|p| p == "super") {
            self.uses.push(Use {
                inline: self.inline.clone(),
                path,
                line,
                public_use,
            });
        }
    }

    /// `crate::a::b`, `super::x`, `self::y` inside a macro call's tokens.
    fn scan_tokens(&mut self, tokens: proc_macro2::TokenStream) {
        use proc_macro2::TokenTree as Tt;
        let tts: Vec<Tt> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tts.len() {
            if let Tt::Group(g) = &tts[i] {
                self.scan_tokens(g.stream());
                i += 1;
                continue;
            }
            let starts =
                matches!(&tts[i], Tt::Ident(id) if id == "crate" || id == "super" || id == "self");
            if !starts {
                i += 1;
                continue;
            }
            let line = tts[i].span().start().line;
            let mut path = vec![tts[i].to_string()];
            let mut j = i + 1;
            while j + 2 < tts.len() && is_colon(&tts[j]) && is_colon(&tts[j + 1]) {
                match &tts[j + 2] {
                    Tt::Ident(id) => {
                        path.push(id.to_string());
                        j += 3;
                    }
                    _ => break,
                }
            }
            if path.len() > 1 {
                self.push(path, line, false);
            }
            i = j.max(i + 1);
        }
    }
}

fn is_colon(t: &proc_macro2::TokenTree) -> bool {
    matches!(t, proc_macro2::TokenTree::Punct(p) if p.as_char() == ':')
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item as I;
    match item {
        I::Const(i) => &i.attrs,
        I::Enum(i) => &i.attrs,
        I::ExternCrate(i) => &i.attrs,
        I::Fn(i) => &i.attrs,
        I::ForeignMod(i) => &i.attrs,
        I::Impl(i) => &i.attrs,
        I::Macro(i) => &i.attrs,
        I::Mod(i) => &i.attrs,
        I::Static(i) => &i.attrs,
        I::Struct(i) => &i.attrs,
        I::Trait(i) => &i.attrs,
        I::TraitAlias(i) => &i.attrs,
        I::Type(i) => &i.attrs,
        I::Union(i) => &i.attrs,
        I::Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if !is_cfg_test(item_attrs(item)) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        self.inline.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.inline.pop();
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let public = !matches!(u.vis, syn::Visibility::Inherited);
        let mut leaves = Vec::new();
        flatten_use(&u.tree, &mut Vec::new(), &mut leaves);
        let line = u.use_token.span.start().line;
        for leaf in leaves {
            self.push(leaf.path, line, public);
        }
    }

    // `pub(super)` and `pub(in path)` restrict visibility; they use nothing of the module named.
    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            let line = p.segments[0].ident.span().start().line;
            self.push(segs, line, false);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.scan_tokens(m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if is_cfg_test(&i.attrs) {
            return;
        }
        let name = match &*i.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        self.names.push(name.unwrap_or_else(|| "impl".into()));
        syn::visit::visit_item_impl(self, i);
        self.names.pop();
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        self.names.push(t.ident.to_string());
        syn::visit::visit_item_trait(self, t);
        self.names.pop();
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.function(&f.sig.ident, f.sig.fn_token.span.start().line, &f.block);
        self.names.push(f.sig.ident.to_string());
        syn::visit::visit_item_fn(self, f);
        self.names.pop();
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_cfg_test(&f.attrs) {
            return;
        }
        self.function(&f.sig.ident, f.sig.fn_token.span.start().line, &f.block);
        self.names.push(f.sig.ident.to_string());
        syn::visit::visit_impl_item_fn(self, f);
        self.names.pop();
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig.ident, f.sig.fn_token.span.start().line, block);
        }
        self.names.push(f.sig.ident.to_string());
        syn::visit::visit_trait_item_fn(self, f);
        self.names.pop();
    }
}
