//! Higress's cluster names: every type with every default, as Higress's Go SDK names them, and
//! an `HttpClient` built from each calling that cluster with that `:authority`.

use std::rc::Rc;

use proxy_async::higress::{
    ConsulCluster, DnsCluster, FqdnCluster, K8sCluster, NacosCluster, RouteCluster,
    StaticIpCluster, TargetCluster,
};
use proxy_async::testing::{Action, PluginTest};
use proxy_async::{Cluster, Error, Flow, HttpClient, Plugin, PluginConfig, Request};

/// A cluster, the name Higress gives it, and its host name (empty: none).
struct Case {
    what: &'static str,
    cluster: Box<dyn Cluster>,
    name: &'static str,
    host: &'static str,
}

fn case(
    what: &'static str,
    cluster: impl Cluster + 'static,
    name: &'static str,
    host: &'static str,
) -> Case {
    Case {
        what,
        cluster: Box::new(cluster),
        name,
        host,
    }
}

fn s(text: &str) -> String {
    text.to_string()
}

fn table() -> Vec<Case> {
    vec![
        case(
            "k8s with namespace and version",
            K8sCluster {
                service_name: s("foo"),
                namespace: s("bar"),
                port: 8080,
                version: s("1.0"),
                ..K8sCluster::default()
            },
            "outbound|8080|1.0|foo.bar.svc.cluster.local",
            "foo.bar.svc.cluster.local",
        ),
        // The namespace defaults to `default` in the cluster name only, as in Higress.
        case(
            "k8s without namespace",
            K8sCluster {
                service_name: s("foo"),
                port: 8080,
                ..K8sCluster::default()
            },
            "outbound|8080||foo.default.svc.cluster.local",
            "foo..svc.cluster.local",
        ),
        case(
            "k8s with host",
            K8sCluster {
                service_name: s("foo"),
                port: 8080,
                host: s("foo.internal"),
                ..K8sCluster::default()
            },
            "outbound|8080||foo.default.svc.cluster.local",
            "foo.internal",
        ),
        case(
            "nacos, default group, version",
            NacosCluster {
                service_name: s("foo"),
                namespace_id: s("xxxx"),
                port: 8080,
                version: s("1.0"),
                ..NacosCluster::default()
            },
            "outbound|8080|1.0|foo.DEFAULT-GROUP.xxxx.nacos",
            "foo",
        ),
        case(
            "nacos, external registry",
            NacosCluster {
                service_name: s("foo"),
                namespace_id: s("xxxx"),
                port: 8080,
                is_ext_registry: true,
                ..NacosCluster::default()
            },
            "outbound|8080||foo.DEFAULT-GROUP.xxxx.nacos-ext",
            "foo",
        ),
        case(
            "nacos, group with underscores, host",
            NacosCluster {
                service_name: s("foo"),
                group: s("my_team_group"),
                namespace_id: s("public"),
                port: 80,
                host: s("foo.nacos.internal"),
                ..NacosCluster::default()
            },
            "outbound|80||foo.my-team-group.public.nacos",
            "foo.nacos.internal",
        ),
        case(
            "static IP",
            StaticIpCluster {
                service_name: s("foo"),
                port: 8080,
                ..StaticIpCluster::default()
            },
            "outbound|8080||foo.static",
            "foo",
        ),
        case(
            "static IP with host",
            StaticIpCluster {
                service_name: s("foo"),
                port: 8080,
                host: s("10.0.0.1:8080"),
            },
            "outbound|8080||foo.static",
            "10.0.0.1:8080",
        ),
        case(
            "DNS",
            DnsCluster {
                service_name: s("foo"),
                domain: s("foo.com"),
                port: 8080,
            },
            "outbound|8080||foo.dns",
            "foo.com",
        ),
        case(
            "DNS without domain",
            DnsCluster {
                service_name: s("foo"),
                port: 8080,
                ..DnsCluster::default()
            },
            "outbound|8080||foo.dns",
            "",
        ),
        case(
            "consul",
            ConsulCluster {
                service_name: s("foo"),
                datacenter: s("dc1"),
                port: 8500,
                ..ConsulCluster::default()
            },
            "outbound|8500||foo.dc1.consul",
            "foo",
        ),
        case(
            "consul with host",
            ConsulCluster {
                service_name: s("foo"),
                datacenter: s("dc1"),
                port: 8500,
                host: s("foo.service.consul"),
            },
            "outbound|8500||foo.dc1.consul",
            "foo.service.consul",
        ),
        case(
            "FQDN",
            FqdnCluster {
                fqdn: s("httpbin.org"),
                port: 80,
                ..FqdnCluster::default()
            },
            "outbound|80||httpbin.org",
            "httpbin.org",
        ),
        case(
            "FQDN with host",
            FqdnCluster {
                fqdn: s("redis.default.svc.cluster.local"),
                host: s("redis"),
                port: 6379,
            },
            "outbound|6379||redis.default.svc.cluster.local",
            "redis",
        ),
        case(
            "target",
            TargetCluster {
                cluster: s("outbound|443||api.example.com"),
                host: s("api.example.com"),
            },
            "outbound|443||api.example.com",
            "api.example.com",
        ),
        case(
            "target without host",
            TargetCluster {
                cluster: s("my-cluster"),
                ..TargetCluster::default()
            },
            "my-cluster",
            "",
        ),
        case("a plain cluster name", s("auth"), "auth", "auth"),
    ]
}

/// The `:authority` a call carries: the host name, or Higress's `unknownhost` without one.
fn authority(case: &Case) -> &'static str {
    if case.host.is_empty() {
        "unknownhost"
    } else {
        case.host
    }
}

#[test]
fn every_cluster_type_has_higress_names_and_defaults() {
    for case in table() {
        assert_eq!(case.cluster.cluster_name(), case.name, "{}", case.what);
        assert_eq!(case.cluster.host_name(), case.host, "{}", case.what);
        let client = HttpClient::new(&*case.cluster);
        assert_eq!(client.cluster(), case.name, "{}", case.what);
        assert_eq!(client.authority(), authority(&case), "{}", case.what);
    }
}

/// Calls `/probe` on one cluster of the table (`cluster` is its index) from the request
/// headers hook, and continues.
struct Probe {
    client: HttpClient,
}

#[derive(serde::Deserialize, Default)]
struct ProbeConfig {
    cluster: usize,
}

impl PluginConfig for ProbeConfig {}

impl Plugin for Probe {
    type Root = ProbeConfig;

    fn new(config: &Rc<ProbeConfig>) -> Self {
        let table = table();
        Probe {
            client: HttpClient::new(&*table[config.cluster].cluster),
        }
    }

    async fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
        self.client.get("/probe").send().await?;
        Ok(Flow::Continue)
    }
}

#[test]
fn a_client_built_from_a_cluster_calls_that_cluster_with_its_host_name() {
    for (index, case) in table().iter().enumerate() {
        let test = PluginTest::<Probe>::new(&format!(r#"{{"cluster": {index}}}"#)).unwrap();
        let stream = test.stream();
        let action = stream.send_request_headers(&[(":authority", "client.example.com")], true);
        assert_eq!(action, Action::Pause, "{}", case.what);
        let calls = test.calls();
        assert_eq!(calls.len(), 1, "{}", case.what);
        assert_eq!(calls[0].cluster(), case.name, "{}", case.what);
        assert_eq!(calls[0].authority(), authority(case), "{}", case.what);
        assert_eq!(calls[0].path(), "/probe", "{}", case.what);
        test.respond(&calls[0], 200, &[], "");
        assert_eq!(stream.resumed_requests(), 1, "{}", case.what);
    }
}

/// Calls the route's own cluster, through a client made before the request was routed.
struct RouteProbe {
    client: HttpClient,
    with_authority: HttpClient,
}

#[derive(serde::Deserialize, Default)]
struct RouteConfig {
    host: String,
}

impl PluginConfig for RouteConfig {}

impl Plugin for RouteProbe {
    type Root = RouteConfig;

    fn new(config: &Rc<RouteConfig>) -> Self {
        let cluster = RouteCluster {
            host: config.host.clone(),
        };
        RouteProbe {
            client: HttpClient::new(cluster.clone()),
            with_authority: HttpClient::new(cluster).with_authority("set.by.plugin"),
        }
    }

    async fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
        futures::try_join!(
            self.client.get("/route").send(),
            self.with_authority.get("/route-with-authority").send()
        )?;
        Ok(Flow::Continue)
    }
}

/// The cluster and authority of the calls of one stream through `RouteProbe`.
fn route_calls(config: &str, route_cluster: &str, authority: &str) -> Vec<(String, String)> {
    let test = PluginTest::<RouteProbe>::new(config).expect("a valid configuration");
    let stream = test.stream();
    stream.set_property(&["cluster_name"], route_cluster);
    stream.send_request_headers(&[(":authority", authority), (":path", "/")], true);
    let calls = test.calls();
    for call in &calls {
        test.respond(call, 200, &[], "");
    }
    assert_eq!(stream.resumed_requests(), 1);
    calls
        .iter()
        .map(|call| (call.cluster().to_string(), call.authority().to_string()))
        .collect()
}

#[test]
fn a_route_cluster_calls_the_requests_cluster_with_the_requests_authority() {
    assert_eq!(
        route_calls(
            "",
            "outbound|80||backend.default.svc.cluster.local",
            "shop.example.com:8080"
        ),
        [
            (
                "outbound|80||backend.default.svc.cluster.local".to_string(),
                "shop.example.com:8080".to_string()
            ),
            (
                "outbound|80||backend.default.svc.cluster.local".to_string(),
                "set.by.plugin".to_string()
            ),
        ]
    );
    // Each stream reads its own route.
    assert_eq!(
        route_calls("", "outbound|80||other", "other.example.com")[0],
        (
            "outbound|80||other".to_string(),
            "other.example.com".to_string()
        )
    );
    // `host` replaces the request's authority.
    assert_eq!(
        route_calls(
            r#"{"host": "backend.internal"}"#,
            "outbound|80||backend",
            "shop.example.com"
        )[0],
        (
            "outbound|80||backend".to_string(),
            "backend.internal".to_string()
        )
    );
}

#[test]
fn a_route_cluster_outside_a_request_has_no_name() {
    let client = HttpClient::new(RouteCluster::default());
    assert_eq!(client.cluster(), "");
    assert_eq!(client.authority(), "unknownhost");
    let named = HttpClient::new(RouteCluster {
        host: s("backend.internal"),
    });
    assert_eq!(named.authority(), "backend.internal");
}
