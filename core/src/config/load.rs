//! Reading a k0s ClusterConfig, a k0sctl Cluster or a bare `spec:` fragment into the
//! effective CPLB configuration, collecting every error and warning with its YAML path and
//! its line and column. The entries of `vrrpInstances` and `virtualServers` are read in
//! modules of their own, and the rules between fields are checked in `rules`.

use super::diagnostic::{Diagnostic, Severity};
use super::instance::instance;
use super::k0s_format::{K0S, field};
use super::model::{ApiSpec, ClusterConfig, Cplb, K0S_API_VERSION, Keepalived, NetworkSpec, Spec};
use super::rules::{cross_spec_rules, instance_rules, server_rules};
use super::virtual_server::virtual_server;
use super::walk::{Fields, Walker, join};
use super::yaml::{Document, NodeId};

/// Which kind of file it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A k0s `ClusterConfig` (k0s.yaml).
    ClusterConfig,
    /// A k0sctl `Cluster` (k0sctl.yaml), config under `spec.k0s.config`.
    K0sctl,
    /// A document starting at `spec:`.
    Fragment,
}

const DEFAULT_API_PORT: u16 = 6443;
const DEFAULT_PROXY_PORT: u16 = 6444;

/// Reads the whole document. Returns the configuration when no error was found.
pub(crate) fn read(
    doc: &Document,
    single: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<(ClusterConfig, SourceKind)> {
    let mut w = Walker::new(doc, K0S);
    let read = read_root(&mut w, single);
    diags.extend(w.into_diagnostics());
    read
}

fn read_root(w: &mut Walker<'_>, single: bool) -> Option<(ClusterConfig, SourceKind)> {
    let root = w.document().root()?;
    let mut top = w.mapping(root, "")?;
    let (kind, spec_id, spec_path) = locate_spec(w, &mut top)?;
    let spec = match spec_id {
        Some(id) => spec(w, id, &spec_path, single)?,
        None => {
            Spec { api: default_api(), network: NetworkSpec { control_plane_load_balancing: None } }
        }
    };
    Some((ClusterConfig { api_version: K0S_API_VERSION, kind: "ClusterConfig", spec }, kind))
}

fn default_api() -> ApiSpec {
    ApiSpec { port: DEFAULT_API_PORT, external_address: String::new(), sans: Vec::new() }
}

/// A port: 0 (unset) is `default`.
fn port(w: &mut Walker<'_>, id: NodeId, path: &str, default: u16) -> Option<u16> {
    match w.int(id, path)? {
        0 => Some(default),
        n @ 1..=65_535 => u16::try_from(n).ok(),
        n => {
            let field = path.rsplit('.').next().unwrap_or(path);
            w.error(path, id, format!("{field} must be in the range of 1-65535, got {n}"));
            None
        }
    }
}

/// Finds `spec` according to the document kind.
fn locate_spec(
    w: &mut Walker<'_>,
    top: &mut Fields,
) -> Option<(SourceKind, Option<NodeId>, String)> {
    let api_version = match field(w, top, "apiVersion") {
        Some(id) => Some((w.text(id, "apiVersion")?, id)),
        None => None,
    };
    let Some((api_version, version_id)) = api_version else {
        return match field(w, top, "spec") {
            Some(spec) => Some((SourceKind::Fragment, Some(spec), "spec".into())),
            None => {
                let message = "expected a k0s ClusterConfig (apiVersion: k0s.k0sproject.io/v1beta1), a k0sctl Cluster (apiVersion: k0sctl.k0sproject.io/v1beta1) or a document starting at spec:".into();
                w.report(Severity::Error, "", top.mark(), message);
                None
            }
        };
    };
    if api_version.starts_with("k0s.k0sproject.io/") {
        let kind = field(w, top, "kind").and_then(|id| w.text(id, "kind").map(|k| (k, id)));
        if let Some((kind, id)) = kind
            && kind != "ClusterConfig"
        {
            w.error("kind", id, format!("kind {kind:?} is not a k0s ClusterConfig"));
            return None;
        }
        Some((SourceKind::ClusterConfig, field(w, top, "spec"), "spec".into()))
    } else if api_version.starts_with("k0sctl.k0sproject.io/") {
        let Some(spec) = field(w, top, "spec") else {
            return Some((SourceKind::K0sctl, None, String::new()));
        };
        let mut spec_fields = w.mapping(spec, "spec")?;
        let Some(k0s) = field(w, &mut spec_fields, "k0s") else {
            return Some((SourceKind::K0sctl, None, String::new()));
        };
        let mut k0s_fields = w.mapping(k0s, "spec.k0s")?;
        let Some(config) = field(w, &mut k0s_fields, "config") else {
            return Some((SourceKind::K0sctl, None, String::new()));
        };
        let mut config_fields = w.mapping(config, "spec.k0s.config")?;
        Some((
            SourceKind::K0sctl,
            field(w, &mut config_fields, "spec"),
            "spec.k0s.config.spec".into(),
        ))
    } else {
        w.error(
            "apiVersion",
            version_id,
            format!("unknown apiVersion {api_version:?}: expected k0s.k0sproject.io/v1beta1 (k0s.yaml) or k0sctl.k0sproject.io/v1beta1 (k0sctl.yaml)"),
        );
        None
    }
}

fn spec(w: &mut Walker<'_>, id: NodeId, path: &str, single: bool) -> Option<Spec> {
    let mut fields = w.mapping(id, path)?;
    if let Some(misplaced) = field(w, &mut fields, "controlPlaneLoadBalancing") {
        let message =
            format!("controlPlaneLoadBalancing is not read here: it belongs under {path}.network");
        w.warn(&join(path, "controlPlaneLoadBalancing"), misplaced, message);
    }
    let api = match field(w, &mut fields, "api") {
        Some(id) => api(w, id, &join(path, "api")),
        None => Some(default_api()),
    };
    let cplb_path = join(path, "network.controlPlaneLoadBalancing");
    let cplb = match field(w, &mut fields, "network") {
        Some(net) => {
            let net_path = join(path, "network");
            let mut net_fields = w.mapping(net, &net_path)?;
            match field(w, &mut net_fields, "controlPlaneLoadBalancing") {
                Some(c) => cplb(w, c, &cplb_path).map(Some),
                None => Some(None),
            }
        }
        None => Some(None),
    };
    let (api, cplb) = (api?, cplb?);
    if let Some(c) = &cplb {
        cross_spec_rules(w, c, &api, &cplb_path, fields.mark(), single, path);
    }
    (!w.has_errors())
        .then_some(Spec { api, network: NetworkSpec { control_plane_load_balancing: cplb } })
}

fn api(w: &mut Walker<'_>, id: NodeId, path: &str) -> Option<ApiSpec> {
    let mut fields = w.mapping(id, path)?;
    let port = match field(w, &mut fields, "port") {
        Some(p) => port(w, p, &join(path, "port"), DEFAULT_API_PORT)?,
        None => DEFAULT_API_PORT,
    };
    let external_address = match field(w, &mut fields, "externalAddress") {
        Some(a) => w.text(a, &join(path, "externalAddress"))?,
        None => String::new(),
    };
    let sans = match field(w, &mut fields, "sans") {
        Some(s) => w.text_list(s, &join(path, "sans"))?.into_iter().map(|(s, _)| s).collect(),
        None => Vec::new(),
    };
    Some(ApiSpec { port, external_address, sans })
}

fn cplb(w: &mut Walker<'_>, id: NodeId, path: &str) -> Option<Cplb> {
    let mut fields = w.mapping(id, path)?;
    let enabled = match field(w, &mut fields, "enabled") {
        Some(e) => w.boolean(e, &join(path, "enabled")),
        None => Some(false),
    };
    let kind = match field(w, &mut fields, "type") {
        Some(t) => {
            let kind = w.text(t, &join(path, "type"));
            match kind.as_deref() {
                Some("" | "Keepalived") => Some("Keepalived".to_owned()),
                Some(other) => {
                    w.error(
                        &join(path, "type"),
                        t,
                        format!("unsupported CPLB type: {other}. Only allowed value: Keepalived"),
                    );
                    None
                }
                None => None,
            }
        }
        None => Some("Keepalived".to_owned()),
    };
    let keepalived = match field(w, &mut fields, "keepalived") {
        Some(k) => keepalived(w, k, &join(path, "keepalived")).map(Some),
        None => Some(None),
    };
    w.unknown_fields(&fields, &["enabled", "type", "keepalived"]);
    let (enabled, kind, keepalived) = (enabled?, kind?, keepalived?);
    if enabled
        && keepalived
            .as_ref()
            .is_none_or(|k| k.vrrp_instances.is_empty() && k.virtual_servers.is_empty())
    {
        let message = "CPLB is enabled but has no vrrpInstances and no virtualServers: nothing will run (k0s only logs this)".into();
        w.report(Severity::Warning, path, fields.mark(), message);
    }
    if !enabled {
        let message = "enabled is false: the block is validated, but CPLB will not run".into();
        w.report(Severity::Warning, &join(path, "enabled"), fields.mark(), message);
    }
    Some(Cplb { enabled, kind, keepalived })
}

fn keepalived(w: &mut Walker<'_>, id: NodeId, path: &str) -> Option<Keepalived> {
    let mut fields = w.mapping(id, path)?;
    let mut ok = true;
    let instances_path = join(path, "vrrpInstances");
    let mut instances = Vec::new();
    if let Some(list) = field(w, &mut fields, "vrrpInstances") {
        for (i, item) in w.list(list, &instances_path)?.iter().copied().enumerate() {
            match instance(w, item, &format!("{instances_path}[{i}]"), i) {
                Some(inst) => instances.push((inst, item)),
                None => ok = false,
            }
        }
    }
    let servers_path = join(path, "virtualServers");
    let mut servers = Vec::new();
    if let Some(list) = field(w, &mut fields, "virtualServers") {
        for (i, item) in w.list(list, &servers_path)?.iter().copied().enumerate() {
            match virtual_server(w, item, &format!("{servers_path}[{i}]")) {
                Some(vs) => servers.push((vs, item)),
                None => ok = false,
            }
        }
    }
    let proxy_port = match field(w, &mut fields, "userSpaceProxyBindPort") {
        Some(p) => port(w, p, &join(path, "userSpaceProxyBindPort"), DEFAULT_PROXY_PORT),
        None => Some(DEFAULT_PROXY_PORT),
    };
    let disable = match field(w, &mut fields, "disableLoadBalancer") {
        Some(d) => w.boolean(d, &join(path, "disableLoadBalancer")),
        None => Some(false),
    };
    let template =
        |w: &mut Walker<'_>, fields: &mut Fields, name: &str| match field(w, fields, name) {
            Some(t) => w.text(t, &join(path, name)),
            None => Some(String::new()),
        };
    let vrrp_template = template(w, &mut fields, "configTemplateVRRP");
    let vs_template = template(w, &mut fields, "configTemplateVS");
    w.unknown_fields(
        &fields,
        &[
            "vrrpInstances",
            "virtualServers",
            "userSpaceProxyBindPort",
            "disableLoadBalancer",
            "configTemplateVRRP",
            "configTemplateVS",
        ],
    );
    for (name, t) in [("configTemplateVRRP", &vrrp_template), ("configTemplateVS", &vs_template)] {
        if t.as_deref().is_some_and(|t| !t.is_empty()) {
            let message = format!(
                "{name} is a keepalived template; cplb does not run keepalived and ignores it"
            );
            w.report(Severity::Warning, &join(path, name), fields.mark(), message);
        }
    }
    let (proxy_port, disable, vrrp_template, vs_template) =
        (proxy_port?, disable?, vrrp_template?, vs_template?);
    if !ok {
        return None;
    }
    instance_rules(w, &instances, &instances_path);
    server_rules(w, &servers, &instances, &servers_path);
    if disable && !servers.is_empty() {
        let message = "virtualServers are not load-balanced with disableLoadBalancer: true (only the VIPs run)".into();
        w.report(Severity::Warning, &join(path, "disableLoadBalancer"), fields.mark(), message);
    }
    Some(Keepalived {
        vrrp_instances: instances.into_iter().map(|(i, _)| i).collect(),
        virtual_servers: servers.into_iter().map(|(s, _)| s).collect(),
        user_space_proxy_bind_port: proxy_port,
        disable_load_balancer: disable,
        config_template_vrrp: vrrp_template,
        config_template_vs: vs_template,
    })
}
