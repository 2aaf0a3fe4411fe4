//! The WIT package in `wit/`: it parses (with wasm-tools' parser), holds the `plugin` world the
//! SDK's component build exports (hooks, callbacks, root context; HTTP, gRPC, shared queues,
//! Redis and foreign functions imported), and documents every item; and the SDK's
//! `wasi:http@0.3.0` middleware package in `sdk/wit-http/`, with the release's WIT vendored.

#![allow(clippy::panic, reason = "test code")]

use std::path::Path;

use wit_parser::{Docs, Function, Resolve, TypeDefKind, WorldItem, WorldKey};

fn resolve() -> (Resolve, wit_parser::PackageId) {
    resolve_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("wit"))
}

fn resolve_dir(dir: &Path) -> (Resolve, wit_parser::PackageId) {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(dir)
        .unwrap_or_else(|error| panic!("{} does not parse: {error:?}", dir.display()));
    (resolve, package)
}

#[test]
fn the_middleware_world_is_the_standard_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/wit-http");
    let (resolve, package) = resolve_dir(&dir);
    let package = &resolve.packages[package];
    assert_eq!(package.name.to_string(), "proxy-async:middleware@0.1.0");
    assert!(package.docs.contents.is_some(), "the package has no docs");
    let world = &resolve.worlds[package.worlds["middleware"]];
    assert!(world.docs.contents.is_some(), "the world has no docs");
    let names = |items: &mut dyn Iterator<Item = &WorldKey>| -> Vec<String> {
        items.map(|key| resolve.name_world_key(key)).collect()
    };
    let imports = names(&mut world.imports.keys());
    let exports = names(&mut world.exports.keys());
    for import in [
        "wasi:http/handler@0.3.0",
        "wasi:http/client@0.3.0",
        "wasi:http/types@0.3.0",
    ] {
        assert!(
            imports.iter().any(|name| name == import),
            "{import} not in {imports:?}"
        );
    }
    assert_eq!(exports, ["wasi:http/handler@0.3.0"]);
}

fn world_item_name(resolve: &Resolve, key: &WorldKey) -> String {
    resolve.name_world_key(key)
}

#[test]
fn the_plugin_world_imports_the_host_interface_and_exports_the_hooks() {
    let (resolve, package) = resolve();
    let package = &resolve.packages[package];
    assert_eq!(package.name.to_string(), "proxy-async:plugin@0.1.0");
    let world = &resolve.worlds[package.worlds["plugin"]];
    let imports: Vec<String> = world
        .imports
        .keys()
        .map(|key| world_item_name(&resolve, key))
        .collect();
    for interface in [
        "http-stream",
        "http-client",
        "logging",
        "properties",
        "metrics",
        "shared-data",
        "timers",
        "grpc",
        "shared-queue",
        "redis",
        "foreign",
    ] {
        let name = format!("proxy-async:plugin/{interface}@0.1.0");
        assert!(imports.contains(&name), "{name} not in {imports:?}");
    }
    let exports: Vec<String> = world
        .exports
        .keys()
        .map(|key| world_item_name(&resolve, key))
        .collect();
    assert_eq!(
        exports,
        [
            "proxy-async:plugin/hooks@0.1.0",
            "proxy-async:plugin/root@0.1.0"
        ]
    );

    let hooks = package.interfaces["hooks"];
    let functions = &resolve.interfaces[hooks].functions;
    for hook in [
        "on-request-headers",
        "on-request-body",
        "on-response-headers",
        "on-response-body",
        "on-log",
    ] {
        assert!(
            functions[hook].kind.is_async(),
            "{hook} must be an async func"
        );
    }
    assert!(!functions["configure"].kind.is_async());
    // What answers by token comes back in a callback of `hooks`, which returns at once.
    for callback in [
        "on-grpc-receive",
        "on-grpc-close",
        "on-queue-ready",
        "on-redis-reply",
    ] {
        assert!(
            !functions[callback].kind.is_async(),
            "{callback} must be a sync func"
        );
    }
    let client = package.interfaces["http-client"];
    assert!(
        resolve.interfaces[client].functions["send"].kind.is_async(),
        "http-client.send must be an async func"
    );
    let root = &resolve.interfaces[package.interfaces["root"]].functions;
    assert!(
        root["run-background"].kind.is_async(),
        "root.run-background must be an async func: it runs the background tasks"
    );
    assert!(!root["stop"].kind.is_async());
}

/// The functions each new interface of the world holds (gRPC, shared queues, Redis, foreign
/// functions): a host implements exactly these.
#[test]
fn the_token_interfaces_hold_what_proxy_wasm_offers() {
    let (resolve, package) = resolve();
    let package = &resolve.packages[package];
    let functions = |interface: &str| -> Vec<String> {
        let mut names: Vec<String> = resolve.interfaces[package.interfaces[interface]]
            .functions
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        functions("grpc"),
        ["call", "cancel", "close", "open-stream", "send"]
    );
    assert_eq!(
        functions("shared-queue"),
        ["dequeue", "enqueue", "register", "resolve"]
    );
    assert_eq!(functions("redis"), ["call", "init"]);
    assert_eq!(functions("foreign"), ["call"]);
    for interface in ["grpc", "shared-queue", "redis", "foreign"] {
        for (name, function) in &resolve.interfaces[package.interfaces[interface]].functions {
            assert!(
                !function.kind.is_async(),
                "{interface}.{name} returns at once (a token or a value)"
            );
        }
    }
}

#[test]
fn every_item_has_a_doc_comment() {
    let (resolve, package) = resolve();
    let package = &resolve.packages[package];
    let mut undocumented = Vec::new();
    let mut check = |what: String, docs: &Docs| {
        if docs
            .contents
            .as_deref()
            .is_none_or(|text| text.trim().is_empty())
        {
            undocumented.push(what);
        }
    };
    check("package".to_string(), &package.docs);
    for (name, world) in &package.worlds {
        check(format!("world {name}"), &resolve.worlds[*world].docs);
        for item in resolve.worlds[*world]
            .imports
            .values()
            .chain(resolve.worlds[*world].exports.values())
        {
            if let WorldItem::Function(function) = item {
                check(format!("world function {}", function.name), &function.docs);
            }
        }
    }
    for (name, id) in &package.interfaces {
        let interface = &resolve.interfaces[*id];
        check(format!("interface {name}"), &interface.docs);
        for function in interface.functions.values() {
            check_function(&mut check, name, function);
        }
        for (type_name, type_id) in &interface.types {
            let def = &resolve.types[*type_id];
            // `use` imports are documented where they are defined.
            if let TypeDefKind::Type(wit_parser::Type::Id(other)) = def.kind
                && resolve.types[other].owner != def.owner
            {
                continue;
            }
            check(format!("type {name}.{type_name}"), &def.docs);
            match &def.kind {
                TypeDefKind::Record(record) => {
                    for field in &record.fields {
                        check(
                            format!("field {name}.{type_name}.{}", field.name),
                            &field.docs,
                        );
                    }
                }
                TypeDefKind::Variant(variant) => {
                    for case in &variant.cases {
                        check(format!("case {name}.{type_name}.{}", case.name), &case.docs);
                    }
                }
                TypeDefKind::Enum(enumeration) => {
                    for case in &enumeration.cases {
                        check(format!("case {name}.{type_name}.{}", case.name), &case.docs);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
}

fn check_function(check: &mut impl FnMut(String, &Docs), interface: &str, function: &Function) {
    check(
        format!("function {interface}.{}", function.name),
        &function.docs,
    );
}
