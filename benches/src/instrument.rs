//! The profiler's pass over a compiled plugin (walrus): a copy of the module that counts, in
//! exported `i64` globals, the wasm instructions each function executes itself and the calls
//! each function makes to the Rust allocator.
//!
//! The instruction counters follow wasmtime 48's fuel accounting (`fuel_before_op` in
//! wasmtime-cranelift's `func_environ.rs`, `default_operator_cost` in wasmtime-environ's
//! `tunables.rs`): every operator costs 1 except `nop`, `drop`, `block`, `loop`, `end`,
//! `else`, `unreachable` and `return` (0); each function call costs 1 more (a function's cost
//! starts at 1); `memory.copy`, `memory.fill` and `memory.init` cost 1 more per byte. A
//! counter is raised at the start of every straight-line run of instructions by that run's
//! cost; a run ends where control may leave or rejoin it (a branch, a nested block, loop or
//! if), as wasmtime's own fuel updates do, so a run is only over-counted when an instruction
//! in it traps. The module needs no new import: the host reads the globals between callbacks.

use std::collections::HashMap;

use walrus::ir::{
    BinaryOp, Binop, Const, GlobalGet, GlobalSet, Instr, InstrLocId, LocalGet, LocalTee, UnaryOp,
    Unop, Value,
};
use walrus::{ConstExpr, FunctionId, GlobalId, LocalFunction, LocalId, Module, ValType};

/// The prefix of the export of function `i`'s instruction counter ([`Instrumented::functions`]).
pub(crate) const FUNCTION_COUNTER: &str = "__profile_fn_";

/// The prefix of the export of allocation call site `i`'s counter ([`Instrumented::sites`]).
pub(crate) const SITE_COUNTER: &str = "__profile_alloc_";

/// The allocator entry points of Rust's global allocator whose callers are counted (the last
/// segment of their demangled names: rustc mangles the shims as `__rustc::__rust_alloc`).
pub(crate) const ALLOCATOR_ENTRY_POINTS: [&str; 4] = [
    "__rust_alloc",
    "__rust_alloc_zeroed",
    "__rust_realloc",
    "__rust_dealloc",
];

/// A copy of a module with counters, and what each counter counts.
#[derive(Debug, Clone)]
pub(crate) struct Instrumented {
    /// The instrumented module.
    pub(crate) wasm: Vec<u8>,
    /// The demangled name of the function whose counter is export
    /// `{FUNCTION_COUNTER}{i}`, for each `i`.
    pub(crate) functions: Vec<String>,
    /// The call site whose counter is export `{SITE_COUNTER}{i}`, for each `i`.
    pub(crate) sites: Vec<AllocationSite>,
}

/// A function that calls an allocator entry point (each call in it counts once).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AllocationSite {
    /// The calling function, demangled.
    pub(crate) caller: String,
    /// The entry point called, one of [`ALLOCATOR_ENTRY_POINTS`].
    pub(crate) allocator: &'static str,
}

/// Adds the counters to a copy of `wasm`.
///
/// Fails on a module without a name section (the profile would name no function: build it
/// with `strip = "debuginfo"` or `false`, not `"symbols"`), and on what the pass does not
/// model: 64-bit memories and exception handling.
pub(crate) fn instrument(wasm: &[u8]) -> Result<Instrumented, String> {
    instrument_with(wasm, None).map(|(instrumented, _)| instrumented)
}

/// The prefix of the export of run `i`'s instruction counter ([`Run`]).
pub(crate) const RUN_COUNTER: &str = "__profile_run_";

/// A straight-line run of a function's original instructions, with its own counter (see
/// [`instrument_runs`]): it executed `counter / cost` times, each instruction in it as often.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Each original instruction's offset in the code section (where DWARF addresses point)
    /// and fuel cost.
    pub(crate) instructions: Vec<(u32, i64)>,
    /// The fuel of one execution of the run (their costs, plus 1 for entering the function).
    pub(crate) cost: i64,
}

/// [`instrument`], and a counter for every straight-line run in the functions named in
/// `functions` (export `{RUN_COUNTER}{i}` counts run `i`), for attributing instructions to
/// source lines. Limited to those functions: a counter per run of a whole module would exceed
/// what a module may export.
pub(crate) fn instrument_runs(
    wasm: &[u8],
    functions: &std::collections::HashSet<String>,
) -> Result<(Instrumented, Vec<Run>), String> {
    instrument_with(wasm, Some(functions))
}

/// Gives a run of instructions (and its cost) a counter of its own, or none.
type RunCounter<'a> = dyn FnMut(&[(Instr, InstrLocId)], i64) -> Option<GlobalId> + 'a;

/// Where the code section's contents start in `wasm`: instruction offsets in DWARF count
/// from there.
fn code_section_start(wasm: &[u8]) -> Result<usize, String> {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|error| format!("cannot parse the module: {error}"))?;
        if let wasmparser::Payload::CodeSectionStart { range, .. } = payload {
            return Ok(range.start);
        }
    }
    Err("the module has no code section".to_string())
}

fn instrument_with(
    wasm: &[u8],
    with_runs: Option<&std::collections::HashSet<String>>,
) -> Result<(Instrumented, Vec<Run>), String> {
    let code_start = if with_runs.is_some() {
        code_section_start(wasm)?
    } else {
        0
    };
    let mut module =
        Module::from_buffer(wasm).map_err(|error| format!("cannot parse the module: {error:#}"))?;
    if module.memories.iter().any(|memory| memory.memory64) {
        return Err("a 64-bit memory: the profiler counts 32-bit lengths only".to_string());
    }
    if module.funcs.iter().all(|function| function.name.is_none()) {
        return Err(
            "the module has no name section, so no function could be named; build it with \
             `strip = \"debuginfo\"` (or `false`), not `\"symbols\"`"
                .to_string(),
        );
    }
    let names: HashMap<FunctionId, String> = module
        .funcs
        .iter()
        .map(|function| {
            let name = function.name.as_deref().map_or_else(
                || format!("func[{}]", function.id().index()),
                |name| format!("{:#}", rustc_demangle::demangle(name)),
            );
            (function.id(), name)
        })
        .collect();
    let allocators: HashMap<FunctionId, &'static str> = names
        .iter()
        .filter_map(|(&id, name)| {
            let last = name.rsplit("::").next().unwrap_or(name);
            ALLOCATOR_ENTRY_POINTS
                .iter()
                .find(|entry| **entry == last)
                .map(|&entry| (id, entry))
        })
        .collect();

    let mut functions = Vec::new();
    let mut sites = Vec::new();
    let mut exports: Vec<(String, GlobalId)> = Vec::new();
    let mut site_counters: HashMap<AllocationSite, GlobalId> = HashMap::new();
    let mut runs: Vec<Run> = Vec::new();
    // `module.funcs` is borrowed mutably while counters are added to `module.globals` and
    // scratch locals to `module.locals`: disjoint fields of the module.
    let (funcs, globals, locals) = (&mut module.funcs, &mut module.globals, &mut module.locals);
    // Shared by the closures that add counters: one for call sites, one for runs.
    let globals = std::cell::RefCell::new(globals);
    let new_counter = || {
        globals
            .borrow_mut()
            .add_local(ValType::I64, true, false, zero())
    };
    for (id, function) in funcs.iter_local_mut() {
        let caller = names.get(&id).cloned().unwrap_or_default();
        let counter = new_counter();
        exports.push((format!("{FUNCTION_COUNTER}{}", functions.len()), counter));
        functions.push(caller.clone());
        let mut site_of = |callee: FunctionId| -> Option<GlobalId> {
            let allocator = *allocators.get(&callee)?;
            let site = AllocationSite {
                caller: caller.clone(),
                allocator,
            };
            let global = *site_counters.entry(site.clone()).or_insert_with(|| {
                let global = new_counter();
                exports.push((format!("{SITE_COUNTER}{}", sites.len()), global));
                sites.push(site);
                global
            });
            Some(global)
        };
        let mut length = None;
        let mut length_local = || *length.get_or_insert_with(|| locals.add(ValType::I32));
        let counts_runs = with_runs.is_some_and(|names| names.contains(&caller));
        let mut run_counters: Vec<(GlobalId, Run)> = Vec::new();
        let mut run_counter = |run: &[(Instr, InstrLocId)], cost: i64| -> Option<GlobalId> {
            if !counts_runs {
                return None;
            }
            let instructions: Vec<(u32, i64)> = run
                .iter()
                .filter(|(_, location)| !location.is_default())
                .map(|(instr, location)| {
                    let offset = (location.data() as usize).saturating_sub(code_start);
                    (u32::try_from(offset).unwrap_or(u32::MAX), fuel_cost(instr))
                })
                .collect();
            let global = new_counter();
            run_counters.push((global, Run { instructions, cost }));
            Some(global)
        };
        instrument_function(
            function,
            counter,
            &mut site_of,
            &mut length_local,
            &mut run_counter,
        )?;
        for (global, run) in run_counters {
            exports.push((format!("{RUN_COUNTER}{}", runs.len()), global));
            runs.push(run);
        }
    }
    for (name, global) in exports {
        module.exports.add(&name, global);
    }
    let instrumented = Instrumented {
        wasm: module.emit_wasm(),
        functions,
        sites,
    };
    Ok((instrumented, runs))
}

/// The initial value of a counter.
fn zero() -> ConstExpr {
    ConstExpr::Value(Value::I64(0))
}

/// Adds the counting to one function: `counter` gets its instructions, `site_of(callee)` is
/// the counter of a call to `callee` if that is an allocator, `length_local()` a scratch `i32`
/// local for the byte counts of bulk memory operations, `run_counter(run, cost)` a counter of
/// its own for a run, if the run gets one.
fn instrument_function(
    function: &mut LocalFunction,
    counter: GlobalId,
    site_of: &mut dyn FnMut(FunctionId) -> Option<GlobalId>,
    length_local: &mut dyn FnMut() -> LocalId,
    run_counter: &mut RunCounter<'_>,
) -> Result<(), String> {
    let entry = function.entry_block();
    let mut pending = vec![entry];
    while let Some(seq) = pending.pop() {
        let instrs = std::mem::take(&mut function.block_mut(seq).instrs);
        let mut rewritten = Vec::with_capacity(instrs.len() + 8);
        let mut run = Vec::new();
        // The function's own cost of being called: wasmtime starts every function at 1.
        let mut run_cost: i64 = i64::from(seq == entry);
        for (instr, location) in instrs {
            match &instr {
                Instr::Block(block) => pending.push(block.seq),
                Instr::Loop(body) => pending.push(body.seq),
                Instr::IfElse(arms) => {
                    pending.push(arms.consequent);
                    pending.push(arms.alternative);
                }
                Instr::Try(_) | Instr::TryTable(_) => {
                    return Err("exception handling: the profiler does not model it".to_string());
                }
                Instr::Call(call) => {
                    if let Some(site) = site_of(call.func) {
                        run.extend(add_to(
                            site,
                            Instr::Const(Const {
                                value: Value::I64(1),
                            }),
                        ));
                    }
                }
                Instr::MemoryCopy(_) | Instr::MemoryFill(_) | Instr::MemoryInit(_) => {
                    // The byte count is on top of the stack: keep it there, add a copy.
                    let length = length_local();
                    run.push(at_no_location(Instr::LocalTee(LocalTee { local: length })));
                    run.push(at_no_location(Instr::LocalGet(LocalGet { local: length })));
                    run.extend(add_to(
                        counter,
                        Instr::Unop(Unop {
                            op: UnaryOp::I64ExtendUI32,
                        }),
                    ));
                }
                _ => {}
            }
            run_cost += fuel_cost(&instr);
            let ends_run = ends_run(&instr);
            run.push((instr, location));
            if ends_run {
                flush(counter, run_cost, &mut run, &mut rewritten, run_counter);
                run_cost = 0;
            }
        }
        flush(counter, run_cost, &mut run, &mut rewritten, run_counter);
        function.block_mut(seq).instrs = rewritten;
    }
    Ok(())
}

/// Appends a run of instructions to `into`, preceded by the raising of `counter` (and of the
/// run's own counter, if `run_counter` gives it one) by `cost`.
fn flush(
    counter: GlobalId,
    cost: i64,
    run: &mut Vec<(Instr, InstrLocId)>,
    into: &mut Vec<(Instr, InstrLocId)>,
    run_counter: &mut RunCounter<'_>,
) {
    if cost != 0 {
        let cost_const = || {
            Instr::Const(Const {
                value: Value::I64(cost),
            })
        };
        into.extend(add_to(counter, cost_const()));
        if let Some(own) = run_counter(run, cost) {
            into.extend(add_to(own, cost_const()));
        }
    }
    into.append(run);
}

/// `global += <the i64 that `value` pushes>`, stack-neutral.
fn add_to(global: GlobalId, value: Instr) -> [(Instr, InstrLocId); 4] {
    [
        at_no_location(value),
        at_no_location(Instr::GlobalGet(GlobalGet { global })),
        at_no_location(Instr::Binop(Binop {
            op: BinaryOp::I64Add,
        })),
        at_no_location(Instr::GlobalSet(GlobalSet { global })),
    ]
}

/// An added instruction: it has no offset in the original code.
fn at_no_location(instr: Instr) -> (Instr, InstrLocId) {
    (instr, InstrLocId::default())
}

/// Wasmtime's default fuel cost of an operator (walrus keeps no `nop`, `end` or `else`).
fn fuel_cost(instr: &Instr) -> i64 {
    match instr {
        Instr::Drop(_)
        | Instr::Block(_)
        | Instr::Loop(_)
        | Instr::Unreachable(_)
        | Instr::Return(_) => 0,
        _ => 1,
    }
}

/// Whether control may leave the run after `instr`, or join it from elsewhere just after:
/// a branch, a return, a trap, or a nested block, loop or if (whose end is reached by
/// branches too). Code after an unconditional one is unreachable, and its run never counted.
fn ends_run(instr: &Instr) -> bool {
    matches!(
        instr,
        Instr::Block(_)
            | Instr::Loop(_)
            | Instr::IfElse(_)
            | Instr::Br(_)
            | Instr::BrIf(_)
            | Instr::BrTable(_)
            | Instr::BrOnNull(_)
            | Instr::BrOnNonNull(_)
            | Instr::BrOnCast(_)
            | Instr::BrOnCastFail(_)
            | Instr::Return(_)
            | Instr::ReturnCall(_)
            | Instr::ReturnCallIndirect(_)
            | Instr::ReturnCallRef(_)
            | Instr::Unreachable(_)
            | Instr::Throw(_)
            | Instr::ThrowRef(_)
    )
}
