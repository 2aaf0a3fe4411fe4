//! The cluster names Higress gives its services (`pkg/wrapper/cluster_wrapper.go` of the Go
//! SDK), as [`Cluster`]s for [`HttpClient::new`](crate::HttpClient::new).
//!
//! Each type's fields are Higress's; empty fields take Higress's defaults, and a `host` (where
//! a type has one) replaces the host name the type would derive.

use std::rc::Rc;

use crate::client::Cluster;
use crate::higress::request;
use crate::runtime::Runtime;

/// The cluster of the route the current request took: its name is the request's
/// `cluster_name` property, its host name `host`, else the request's `:authority`. Both are
/// read at each call, so a client made before the route is known still calls the right one.
/// Outside a request (or when the proxy has not routed it), the name is empty and the proxy
/// refuses the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCluster {
    /// The `:authority` of the calls; empty: the request's own.
    pub host: String,
}

impl Cluster for RouteCluster {
    fn cluster_name(&self) -> String {
        Runtime::current()
            .map(|runtime| request::property(crate::host::backend(&runtime.host), "cluster_name"))
            .unwrap_or_default()
    }

    fn host_name(&self) -> String {
        if !self.host.is_empty() {
            return self.host.clone();
        }
        Runtime::current()
            .map(|runtime| request::authority(crate::host::backend(&runtime.host)))
            .unwrap_or_default()
    }

    fn per_call(&self) -> Option<Rc<dyn Cluster>> {
        Some(Rc::new(self.clone()))
    }
}

/// A cluster named verbatim: `cluster`, with `host` as the `:authority`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetCluster {
    /// The proxy's name for the cluster.
    pub cluster: String,
    /// The `:authority` of the calls.
    pub host: String,
}

impl Cluster for TargetCluster {
    fn cluster_name(&self) -> String {
        self.cluster.clone()
    }

    fn host_name(&self) -> String {
        self.host.clone()
    }
}

/// A Kubernetes service: `outbound|{port}|{version}|{service_name}.{namespace}.svc.cluster.local`,
/// namespace `default` when empty. Its host name is
/// `{service_name}.{namespace}.svc.cluster.local` with the namespace as given: Higress does not
/// default it there, so set `namespace` (or `host`) for a usable `:authority`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sCluster {
    /// The service's name.
    pub service_name: String,
    /// Its namespace; empty: `default` (in the cluster name only).
    pub namespace: String,
    /// Its port.
    pub port: u16,
    /// The subset (version) to call; empty: any.
    pub version: String,
    /// The `:authority` of the calls; empty: the service's host name.
    pub host: String,
}

impl Cluster for K8sCluster {
    fn cluster_name(&self) -> String {
        let namespace = or_default(&self.namespace, "default");
        format!(
            "outbound|{}|{}|{}.{namespace}.svc.cluster.local",
            self.port, self.version, self.service_name
        )
    }

    fn host_name(&self) -> String {
        if !self.host.is_empty() {
            return self.host.clone();
        }
        format!("{}.{}.svc.cluster.local", self.service_name, self.namespace)
    }
}

/// A service registered in Nacos:
/// `outbound|{port}|{version}|{service_name}.{group}.{namespace_id}.nacos` (`.nacos-ext` for an
/// external registry such as EDAS or SAE); the group is `DEFAULT-GROUP` when empty, and its
/// `_` become `-`. The host name is the service's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NacosCluster {
    /// The service's name.
    pub service_name: String,
    /// Its group; empty: `DEFAULT-GROUP`.
    pub group: String,
    /// The Nacos namespace ID.
    pub namespace_id: String,
    /// Its port.
    pub port: u16,
    /// Registered in an external registry (EDAS, SAE): the name ends in `.nacos-ext`.
    pub is_ext_registry: bool,
    /// The subset (version) to call; empty: any.
    pub version: String,
    /// The `:authority` of the calls; empty: the service's name.
    pub host: String,
}

impl Cluster for NacosCluster {
    fn cluster_name(&self) -> String {
        let group = if self.group.is_empty() {
            "DEFAULT-GROUP".to_string()
        } else {
            self.group.replace('_', "-")
        };
        let registry = if self.is_ext_registry {
            "nacos-ext"
        } else {
            "nacos"
        };
        format!(
            "outbound|{}|{}|{}.{group}.{}.{registry}",
            self.port, self.version, self.service_name, self.namespace_id
        )
    }

    fn host_name(&self) -> String {
        or_default(&self.host, &self.service_name).to_string()
    }
}

/// A service with fixed IP addresses: `outbound|{port}||{service_name}.static`; the host name
/// is the service's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticIpCluster {
    /// The service's name.
    pub service_name: String,
    /// Its port.
    pub port: u16,
    /// The `:authority` of the calls; empty: the service's name.
    pub host: String,
}

impl Cluster for StaticIpCluster {
    fn cluster_name(&self) -> String {
        format!("outbound|{}||{}.static", self.port, self.service_name)
    }

    fn host_name(&self) -> String {
        or_default(&self.host, &self.service_name).to_string()
    }
}

/// A service resolved by DNS: `outbound|{port}||{service_name}.dns`; the host name is
/// `domain` (empty: the calls carry `unknownhost`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsCluster {
    /// The service's name.
    pub service_name: String,
    /// The domain, the `:authority` of the calls.
    pub domain: String,
    /// Its port.
    pub port: u16,
}

impl Cluster for DnsCluster {
    fn cluster_name(&self) -> String {
        format!("outbound|{}||{}.dns", self.port, self.service_name)
    }

    fn host_name(&self) -> String {
        self.domain.clone()
    }
}

/// A service registered in Consul: `outbound|{port}||{service_name}.{datacenter}.consul`; the
/// host name is the service's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsulCluster {
    /// The service's name.
    pub service_name: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Its port.
    pub port: u16,
    /// The `:authority` of the calls; empty: the service's name.
    pub host: String,
}

impl Cluster for ConsulCluster {
    fn cluster_name(&self) -> String {
        format!(
            "outbound|{}||{}.{}.consul",
            self.port, self.service_name, self.datacenter
        )
    }

    fn host_name(&self) -> String {
        or_default(&self.host, &self.service_name).to_string()
    }
}

/// A service by its full Higress name (`redis.default.svc.cluster.local`, `x.static`,
/// `x.dns`, ...), the convention of Higress's own plugins (`serviceName` and `servicePort` in
/// their configuration): `outbound|{port}||{fqdn}`; the host name is the FQDN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FqdnCluster {
    /// The service's full name.
    pub fqdn: String,
    /// The `:authority` of the calls; empty: the FQDN.
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl Cluster for FqdnCluster {
    fn cluster_name(&self) -> String {
        format!("outbound|{}||{}", self.port, self.fqdn)
    }

    fn host_name(&self) -> String {
        or_default(&self.host, &self.fqdn).to_string()
    }
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}
