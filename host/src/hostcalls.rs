//! The `env.proxy_*` imports: decode the guest's arguments, call the [`Hostcalls`], encode the
//! results. Signatures are exactly those the `proxy-wasm` crate 0.2.5 and our SDK declare
//! (every parameter i32, except the i64 value of `proxy_record_metric` and
//! `proxy_increment_metric`); the return value is the `proxy_status_t` code.

use wasmtime::Linker;

use crate::guest::{
    Ctx, HostState, check_out, code, out_bytes, slice, with_memory, write_u32, write_u64,
};
use proxy_async_abi::map::{self, BorrowedPairs};
use proxy_async_abi::{BufferType, Hostcalls, LogLevel, MapType, MetricType, Status, StreamType};

/// The hostcalls module name.
const ENV: &str = "env";

/// Decodes a serialized map passed by the guest; a malformed one is `BadArgument`.
fn map_arg(memory: &[u8], ptr: u32, len: u32) -> Result<BorrowedPairs<'_>, Status> {
    map::decode(slice(memory, ptr, len)?).map_err(|_| Status::BadArgument)
}

/// Defines every `env.proxy_*` import in `linker`.
#[allow(clippy::too_many_lines, reason = "one short definition per hostcall")]
pub(crate) fn add_to_linker<H: Hostcalls + 'static>(
    linker: &mut Linker<HostState<H>>,
) -> wasmtime::Result<()> {
    // Logging, time, context.
    linker.func_wrap(
        ENV,
        "proxy_log",
        |mut c: Ctx<'_, H>, level: u32, ptr: u32, len: u32| {
            code(with_memory(&mut c, |memory, state| {
                state.log(LogLevel::from(level), slice(memory, ptr, len)?)
            }))
        },
    )?;
    linker.func_wrap(ENV, "proxy_get_log_level", |mut c: Ctx<'_, H>, ret: u32| {
        code(with_memory(&mut c, |memory, state| {
            check_out(memory, ret, 4)?;
            let level = state.host().get_log_level()?;
            write_u32(memory, ret, level.into())
        }))
    })?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Ctx<'_, H>, ret: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret, 8)?;
                let now = state.host().get_current_time_nanoseconds()?;
                write_u64(memory, ret, now)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Ctx<'_, H>, period: u32| {
            code(c.data_mut().host().set_tick_period_milliseconds(period))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_effective_context",
        |mut c: Ctx<'_, H>, context_id: u32| {
            code(c.data_mut().host().set_effective_context(context_id))
        },
    )?;
    linker.func_wrap(ENV, "proxy_done", |mut c: Ctx<'_, H>| {
        code(c.data_mut().host().done())
    })?;

    // Buffers.
    linker.func_wrap(
        ENV,
        "proxy_get_buffer_bytes",
        |mut c: Ctx<'_, H>, buffer: u32, start: u32, max: u32, ret_ptr: u32, ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |_, state| {
                state
                    .host()
                    .get_buffer_bytes(BufferType::from(buffer), start, max)
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_buffer_bytes",
        |mut c: Ctx<'_, H>, buffer: u32, start: u32, size: u32, ptr: u32, len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let value = slice(memory, ptr, len)?;
                state
                    .host()
                    .set_buffer_bytes(BufferType::from(buffer), start, size, value)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_buffer_status",
        |mut c: Ctx<'_, H>, buffer: u32, ret_size: u32, ret_flags: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_size, 4)?;
                check_out(memory, ret_flags, 4)?;
                let (size, flags) = state.host().get_buffer_status(BufferType::from(buffer))?;
                write_u32(memory, ret_size, size)?;
                write_u32(memory, ret_flags, flags)
            }))
        },
    )?;

    // Header maps.
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_size",
        |mut c: Ctx<'_, H>, map: u32, ret: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret, 4)?;
                let size = state.host().get_header_map_size(MapType::from(map))?;
                write_u32(memory, ret, size)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Ctx<'_, H>, map: u32, ret_ptr: u32, ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |_, state| {
                let pairs = state.host().get_header_map_pairs(MapType::from(map))?;
                Ok(map::encode(&pairs))
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: Ctx<'_, H>, map: u32, ptr: u32, len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let pairs = map_arg(memory, ptr, len)?;
                state
                    .host()
                    .set_header_map_pairs(MapType::from(map), &pairs)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        |mut c: Ctx<'_, H>, map: u32, key_ptr: u32, key_len: u32, ret_ptr: u32, ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |memory, state| {
                let key = slice(memory, key_ptr, key_len)?;
                state.host().get_header_map_value(MapType::from(map), key)
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        |mut c: Ctx<'_, H>,
         map: u32,
         key_ptr: u32,
         key_len: u32,
         value_ptr: u32,
         value_len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let key = slice(memory, key_ptr, key_len)?;
                let value = slice(memory, value_ptr, value_len)?;
                state
                    .host()
                    .add_header_map_value(MapType::from(map), key, value)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        |mut c: Ctx<'_, H>,
         map: u32,
         key_ptr: u32,
         key_len: u32,
         value_ptr: u32,
         value_len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let key = slice(memory, key_ptr, key_len)?;
                let value = slice(memory, value_ptr, value_len)?;
                state
                    .host()
                    .replace_header_map_value(MapType::from(map), key, value)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        |mut c: Ctx<'_, H>, map: u32, key_ptr: u32, key_len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let key = slice(memory, key_ptr, key_len)?;
                state
                    .host()
                    .remove_header_map_value(MapType::from(map), key)
            }))
        },
    )?;

    // Streams.
    linker.func_wrap(
        ENV,
        "proxy_continue_stream",
        |mut c: Ctx<'_, H>, stream: u32| {
            code(
                c.data_mut()
                    .host()
                    .continue_stream(StreamType::from(stream)),
            )
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_close_stream",
        |mut c: Ctx<'_, H>, stream: u32| {
            code(c.data_mut().host().close_stream(StreamType::from(stream)))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_send_local_response",
        |mut c: Ctx<'_, H>,
         status_code: u32,
         details_ptr: u32,
         details_len: u32,
         body_ptr: u32,
         body_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         grpc_status: i32| {
            code(with_memory(&mut c, |memory, state| {
                let details = slice(memory, details_ptr, details_len)?;
                let body = slice(memory, body_ptr, body_len)?;
                let headers = map_arg(memory, headers_ptr, headers_len)?;
                state
                    .host()
                    .send_local_response(status_code, details, body, &headers, grpc_status)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_status",
        |mut c: Ctx<'_, H>, ret_code: u32, ret_ptr: u32, ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |memory, state| {
                check_out(memory, ret_code, 4)?;
                let (status_code, message) = state.host().get_status()?;
                write_u32(memory, ret_code, status_code)?;
                Ok(message)
            })
        },
    )?;

    // HTTP and gRPC calls.
    linker.func_wrap(
        ENV,
        "proxy_http_call",
        |mut c: Ctx<'_, H>,
         upstream_ptr: u32,
         upstream_len: u32,
         headers_ptr: u32,
         headers_len: u32,
         body_ptr: u32,
         body_len: u32,
         trailers_ptr: u32,
         trailers_len: u32,
         timeout_ms: u32,
         ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let upstream = slice(memory, upstream_ptr, upstream_len)?;
                let headers = map_arg(memory, headers_ptr, headers_len)?;
                let body = slice(memory, body_ptr, body_len)?;
                let trailers = map_arg(memory, trailers_ptr, trailers_len)?;
                let id = state
                    .host()
                    .http_call(upstream, &headers, body, &trailers, timeout_ms)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    // Higress's Redis extension.
    linker.func_wrap(
        ENV,
        "proxy_redis_init",
        |mut c: Ctx<'_, H>,
         upstream_ptr: u32,
         upstream_len: u32,
         username_ptr: u32,
         username_len: u32,
         password_ptr: u32,
         password_len: u32,
         timeout_ms: u32| {
            code(with_memory(&mut c, |memory, state| {
                let upstream = slice(memory, upstream_ptr, upstream_len)?;
                let username = slice(memory, username_ptr, username_len)?;
                let password = slice(memory, password_ptr, password_len)?;
                state
                    .host()
                    .redis_init(upstream, username, password, timeout_ms)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_redis_call",
        |mut c: Ctx<'_, H>,
         upstream_ptr: u32,
         upstream_len: u32,
         query_ptr: u32,
         query_len: u32,
         ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let upstream = slice(memory, upstream_ptr, upstream_len)?;
                let query = slice(memory, query_ptr, query_len)?;
                let id = state.host().redis_call(upstream, query)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_call",
        |mut c: Ctx<'_, H>,
         upstream_ptr: u32,
         upstream_len: u32,
         service_ptr: u32,
         service_len: u32,
         method_ptr: u32,
         method_len: u32,
         metadata_ptr: u32,
         metadata_len: u32,
         message_ptr: u32,
         message_len: u32,
         timeout_ms: u32,
         ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let upstream = slice(memory, upstream_ptr, upstream_len)?;
                let service = slice(memory, service_ptr, service_len)?;
                let method = slice(memory, method_ptr, method_len)?;
                let metadata = map_arg(memory, metadata_ptr, metadata_len)?;
                let message = slice(memory, message_ptr, message_len)?;
                let id = state
                    .host()
                    .grpc_call(upstream, service, method, &metadata, message, timeout_ms)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_stream",
        |mut c: Ctx<'_, H>,
         upstream_ptr: u32,
         upstream_len: u32,
         service_ptr: u32,
         service_len: u32,
         method_ptr: u32,
         method_len: u32,
         metadata_ptr: u32,
         metadata_len: u32,
         ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let upstream = slice(memory, upstream_ptr, upstream_len)?;
                let service = slice(memory, service_ptr, service_len)?;
                let method = slice(memory, method_ptr, method_len)?;
                let metadata = map_arg(memory, metadata_ptr, metadata_len)?;
                let id = state
                    .host()
                    .grpc_stream(upstream, service, method, &metadata)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_send",
        |mut c: Ctx<'_, H>, id: u32, ptr: u32, len: u32, end_stream: u32| {
            code(with_memory(&mut c, |memory, state| {
                let message = slice(memory, ptr, len)?;
                state.host().grpc_send(id, message, end_stream != 0)
            }))
        },
    )?;
    linker.func_wrap(ENV, "proxy_grpc_cancel", |mut c: Ctx<'_, H>, id: u32| {
        code(c.data_mut().host().grpc_cancel(id))
    })?;
    linker.func_wrap(ENV, "proxy_grpc_close", |mut c: Ctx<'_, H>, id: u32| {
        code(c.data_mut().host().grpc_close(id))
    })?;

    // Shared data and queues.
    linker.func_wrap(
        ENV,
        "proxy_get_shared_data",
        |mut c: Ctx<'_, H>,
         key_ptr: u32,
         key_len: u32,
         ret_ptr: u32,
         ret_len: u32,
         ret_cas: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |memory, state| {
                check_out(memory, ret_cas, 4)?;
                let key = slice(memory, key_ptr, key_len)?;
                let (value, cas) = state.host().get_shared_data(key)?;
                write_u32(memory, ret_cas, cas)?;
                Ok(value)
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_shared_data",
        |mut c: Ctx<'_, H>,
         key_ptr: u32,
         key_len: u32,
         value_ptr: u32,
         value_len: u32,
         cas: u32| {
            code(with_memory(&mut c, |memory, state| {
                let key = slice(memory, key_ptr, key_len)?;
                let value = slice(memory, value_ptr, value_len)?;
                state.host().set_shared_data(key, value, cas)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        |mut c: Ctx<'_, H>, name_ptr: u32, name_len: u32, ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let name = slice(memory, name_ptr, name_len)?;
                let id = state.host().register_shared_queue(name)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        |mut c: Ctx<'_, H>, vm_ptr: u32, vm_len: u32, name_ptr: u32, name_len: u32, ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let vm_id = slice(memory, vm_ptr, vm_len)?;
                let name = slice(memory, name_ptr, name_len)?;
                let id = state.host().resolve_shared_queue(vm_id, name)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Ctx<'_, H>, queue_id: u32, ptr: u32, len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let value = slice(memory, ptr, len)?;
                state.host().enqueue_shared_queue(queue_id, value)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut c: Ctx<'_, H>, queue_id: u32, ret_ptr: u32, ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |_, state| {
                state.host().dequeue_shared_queue(queue_id)
            })
        },
    )?;

    // Metrics.
    linker.func_wrap(
        ENV,
        "proxy_define_metric",
        |mut c: Ctx<'_, H>, metric_type: u32, name_ptr: u32, name_len: u32, ret_id: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret_id, 4)?;
                let name = slice(memory, name_ptr, name_len)?;
                let id = state
                    .host()
                    .define_metric(MetricType::from(metric_type), name)?;
                write_u32(memory, ret_id, id)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_record_metric",
        |mut c: Ctx<'_, H>, metric_id: u32, value: i64| {
            code(c.data_mut().host().record_metric(metric_id, value))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_increment_metric",
        |mut c: Ctx<'_, H>, metric_id: u32, delta: i64| {
            code(c.data_mut().host().increment_metric(metric_id, delta))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_metric",
        |mut c: Ctx<'_, H>, metric_id: u32, ret: u32| {
            code(with_memory(&mut c, |memory, state| {
                check_out(memory, ret, 8)?;
                let value = state.host().get_metric(metric_id)?;
                write_u64(memory, ret, value)
            }))
        },
    )?;

    // Properties and foreign functions.
    linker.func_wrap(
        ENV,
        "proxy_get_property",
        |mut c: Ctx<'_, H>, path_ptr: u32, path_len: u32, ret_ptr: u32, ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |memory, state| {
                let path = slice(memory, path_ptr, path_len)?;
                state.host().get_property(path)
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_property",
        |mut c: Ctx<'_, H>, path_ptr: u32, path_len: u32, value_ptr: u32, value_len: u32| {
            code(with_memory(&mut c, |memory, state| {
                let path = slice(memory, path_ptr, path_len)?;
                let value = slice(memory, value_ptr, value_len)?;
                state.host().set_property(path, value)
            }))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        |mut c: Ctx<'_, H>,
         name_ptr: u32,
         name_len: u32,
         args_ptr: u32,
         args_len: u32,
         ret_ptr: u32,
         ret_len: u32| {
            out_bytes(&mut c, ret_ptr, ret_len, |memory, state| {
                let name = slice(memory, name_ptr, name_len)?;
                let arguments = slice(memory, args_ptr, args_len)?;
                state.host().call_foreign_function(name, arguments)
            })
        },
    )?;
    Ok(())
}
