//! What Higress reads about the request being served: its `:authority` and the proxy's
//! `route_name` and `cluster_name` properties. Anything missing or unreadable reads as empty,
//! which no route, service or domain rule (but `*`) matches.

use std::rc::Rc;

use crate::higress::rules::{MatchInput, RuleSet};
use crate::host::{Host, MapType};

/// The configuration of the request being served, as Higress chooses it; `None`: the plugin
/// leaves the request alone.
pub(crate) fn select<C, H: Host + ?Sized>(host: &H, rules: &RuleSet<C>) -> Option<Rc<C>> {
    let authority = authority(host);
    let route_name = property(host, "route_name");
    let cluster_name = property(host, "cluster_name");
    let selected = rules.select(&MatchInput {
        authority: &authority,
        route_name: &route_name,
        cluster_name: &cluster_name,
    });
    if selected.is_none() {
        log::debug!(
            "no Higress rule matches this request (authority `{authority}`, route `{route_name}`, cluster `{cluster_name}`) and there is no global configuration: the plugin leaves it alone"
        );
    }
    selected.cloned()
}

/// The request's `:authority`, port included.
pub(crate) fn authority<H: Host + ?Sized>(host: &H) -> String {
    request_header(host, ":authority")
}

/// A request header as text (lossy); empty when absent.
pub(crate) fn request_header<H: Host + ?Sized>(host: &H, name: &str) -> String {
    match host.get_map_value(MapType::HttpRequestHeaders, name) {
        Ok(value) => value
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default(),
        Err(error) => {
            log::warn!("reading the request's {name}: {error}");
            String::new()
        }
    }
}

/// A top-level property of the request (`route_name`, `cluster_name`) as text (lossy); empty
/// when the proxy has none.
pub(crate) fn property<H: Host + ?Sized>(host: &H, name: &str) -> String {
    match host.get_property(&[name]) {
        Ok(value) => value
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default(),
        Err(error) => {
            log::warn!("reading the property {name}: {error}");
            String::new()
        }
    }
}
