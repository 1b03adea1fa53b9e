//! Reading a k0s ClusterConfig, a k0sctl Cluster or a bare `spec:` fragment into the
//! effective CPLB configuration, collecting every error and warning with its YAML path and
//! its line and column.

use core::net::IpAddr;
use core::time::Duration;

use super::diagnostic::{Diagnostic, Severity};
use super::duration::parse_go_duration;
use super::model::{
    ApiSpec, Cidr, ClusterConfig, Cplb, K0S_API_VERSION, Keepalived, LbAlgo, LbKind, NetworkSpec,
    Spec, VirtualServer, VrrpInstance,
};
use super::scalar::{Plain, as_go_string, resolve};
use super::yaml::{Document, Mark, NodeId};

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
const DEFAULT_ADDRESS_LABEL: u32 = 10_000;
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
const DEFAULT_PERSISTENCE: u32 = 360;
const MAX_PERSISTENCE: i128 = 2_678_400;
const FIRST_AUTO_VRID: usize = 51;

/// Reads the whole document. Returns the configuration when no error was found.
pub(crate) fn read(
    doc: &Document,
    single: bool,
    diags: &mut Vec<Diagnostic>,
) -> Option<(ClusterConfig, SourceKind)> {
    let mut w = Walker { doc, diags };
    let root = doc.root()?;
    let mut top = w.mapping(root, "")?;
    let (kind, spec_id, spec_path) = w.locate_spec(&mut top)?;
    let spec = match spec_id {
        Some(id) => w.spec(id, &spec_path, single)?,
        None => {
            Spec { api: default_api(), network: NetworkSpec { control_plane_load_balancing: None } }
        }
    };
    Some((ClusterConfig { api_version: K0S_API_VERSION, kind: "ClusterConfig", spec }, kind))
}

fn default_api() -> ApiSpec {
    ApiSpec { port: DEFAULT_API_PORT, external_address: String::new(), sans: Vec::new() }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// A mapping's entries by key, remembering which were read.
struct Fields {
    entries: Vec<(String, NodeId, NodeId)>,
    used: Vec<bool>,
    mark: Mark,
}

impl Fields {
    /// The value of `name`, matched exactly or, as Go's JSON decoding does, ignoring case.
    fn take(&mut self, w: &mut Walker<'_>, path: &str, name: &str) -> Option<NodeId> {
        let exact = self.entries.iter().position(|(k, _, _)| k == name);
        let index = exact
            .or_else(|| self.entries.iter().position(|(k, _, _)| k.eq_ignore_ascii_case(name)))?;
        if let (Some(used), Some((key, key_id, value))) =
            (self.used.get_mut(index), self.entries.get(index))
        {
            *used = true;
            if exact.is_none() {
                let message = format!(
                    "k0s matches field names ignoring case and reads {key:?} as {name:?}; write {name:?}"
                );
                w.push(Severity::Warning, &join(path, key), w.doc.mark(*key_id), message);
            }
            return Some(*value);
        }
        None
    }

    /// Reports every key not read as unknown, with the nearest known name.
    fn reject_unknown(&self, w: &mut Walker<'_>, path: &str, known: &[&str]) {
        for ((key, key_id, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let nearest = known
                .iter()
                .map(|k| {
                    (strsim::levenshtein(&key.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k)
                })
                .min()
                .filter(|(d, _)| *d <= 3 || key.len() > 6 && *d <= key.len() / 3);
            let hint = match nearest {
                Some((_, k)) => format!("; did you mean {k:?}?"),
                None => format!("; the fields here are {}", known.join(", ")),
            };
            let message = format!("unknown field {key:?}{hint}");
            w.push(Severity::Error, &join(path, key), w.doc.mark(*key_id), message);
        }
    }
}

struct Walker<'a> {
    doc: &'a Document,
    diags: &'a mut Vec<Diagnostic>,
}

impl Walker<'_> {
    fn push(&mut self, severity: Severity, path: &str, mark: Mark, message: String) {
        let path = if path.is_empty() { "<document>".to_owned() } else { path.to_owned() };
        self.diags.push(Diagnostic { severity, path, mark, message });
    }

    fn error(&mut self, path: &str, id: NodeId, message: String) {
        let mark = self.doc.mark(id);
        self.push(Severity::Error, path, mark, message);
    }

    fn warn(&mut self, path: &str, id: NodeId, message: String) {
        let mark = self.doc.mark(id);
        self.push(Severity::Warning, path, mark, message);
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    /// The node as a mapping; an empty scalar (`key:` with nothing) is an empty mapping.
    fn mapping(&mut self, id: NodeId, path: &str) -> Option<Fields> {
        let mark = self.doc.mark(id);
        if let Some((raw, plain)) = self.doc.scalar(id)
            && plain
            && resolve(raw) == Plain::Null
        {
            return Some(Fields { entries: Vec::new(), used: Vec::new(), mark });
        }
        let Some(entries) = self.doc.entries(id) else {
            let what = self.doc.describe(id);
            self.error(path, id, format!("must be a mapping of fields (key: value), got {what}"));
            return None;
        };
        let mut out: Vec<(String, NodeId, NodeId)> = Vec::new();
        for &(k, v) in entries {
            let Some((key, _)) = self.doc.scalar(k) else {
                self.error(path, k, "a mapping key must be a plain name".into());
                continue;
            };
            if out.iter().any(|(seen, _, _)| seen == key) {
                self.error(
                    &join(path, key),
                    k,
                    format!("duplicate key {key:?}: only one may be given"),
                );
                continue;
            }
            out.push((key.to_owned(), k, v));
        }
        let used = vec![false; out.len()];
        Some(Fields { entries: out, used, mark })
    }

    /// Finds `spec` according to the document kind.
    fn locate_spec(&mut self, top: &mut Fields) -> Option<(SourceKind, Option<NodeId>, String)> {
        let api_version = match top.take(self, "", "apiVersion") {
            Some(id) => Some((self.string(id, "apiVersion")?, id)),
            None => None,
        };
        let Some((api_version, version_id)) = api_version else {
            return match top.take(self, "", "spec") {
                Some(spec) => Some((SourceKind::Fragment, Some(spec), "spec".into())),
                None => {
                    let message = "expected a k0s ClusterConfig (apiVersion: k0s.k0sproject.io/v1beta1), a k0sctl Cluster (apiVersion: k0sctl.k0sproject.io/v1beta1) or a document starting at spec:".into();
                    self.push(Severity::Error, "", top.mark, message);
                    None
                }
            };
        };
        if api_version.starts_with("k0s.k0sproject.io/") {
            let kind =
                top.take(self, "", "kind").and_then(|id| self.string(id, "kind").map(|k| (k, id)));
            if let Some((kind, id)) = kind
                && kind != "ClusterConfig"
            {
                self.error("kind", id, format!("kind {kind:?} is not a k0s ClusterConfig"));
                return None;
            }
            Some((SourceKind::ClusterConfig, top.take(self, "", "spec"), "spec".into()))
        } else if api_version.starts_with("k0sctl.k0sproject.io/") {
            let Some(spec) = top.take(self, "", "spec") else {
                return Some((SourceKind::K0sctl, None, String::new()));
            };
            let mut spec_fields = self.mapping(spec, "spec")?;
            let Some(k0s) = spec_fields.take(self, "spec", "k0s") else {
                return Some((SourceKind::K0sctl, None, String::new()));
            };
            let mut k0s_fields = self.mapping(k0s, "spec.k0s")?;
            let Some(config) = k0s_fields.take(self, "spec.k0s", "config") else {
                return Some((SourceKind::K0sctl, None, String::new()));
            };
            let mut config_fields = self.mapping(config, "spec.k0s.config")?;
            Some((
                SourceKind::K0sctl,
                config_fields.take(self, "spec.k0s.config", "spec"),
                "spec.k0s.config.spec".into(),
            ))
        } else {
            self.error(
                "apiVersion",
                version_id,
                format!("unknown apiVersion {api_version:?}: expected k0s.k0sproject.io/v1beta1 (k0s.yaml) or k0sctl.k0sproject.io/v1beta1 (k0sctl.yaml)"),
            );
            None
        }
    }

    fn spec(&mut self, id: NodeId, path: &str, single: bool) -> Option<Spec> {
        let mut fields = self.mapping(id, path)?;
        if let Some(misplaced) = fields.take(self, path, "controlPlaneLoadBalancing") {
            let message = format!(
                "controlPlaneLoadBalancing is not read here: it belongs under {path}.network"
            );
            self.warn(&join(path, "controlPlaneLoadBalancing"), misplaced, message);
        }
        let api = match fields.take(self, path, "api") {
            Some(api) => self.api(api, &join(path, "api")),
            None => Some(default_api()),
        };
        let cplb_path = join(path, "network.controlPlaneLoadBalancing");
        let cplb = match fields.take(self, path, "network") {
            Some(net) => {
                let net_path = join(path, "network");
                let mut net_fields = self.mapping(net, &net_path)?;
                match net_fields.take(self, &net_path, "controlPlaneLoadBalancing") {
                    Some(c) => self.cplb(c, &cplb_path).map(Some),
                    None => Some(None),
                }
            }
            None => Some(None),
        };
        let (api, cplb) = (api?, cplb?);
        if let Some(c) = &cplb {
            self.cross_spec_rules(c, &api, &cplb_path, fields.mark, single, path);
        }
        (!self.has_errors())
            .then_some(Spec { api, network: NetworkSpec { control_plane_load_balancing: cplb } })
    }

    fn api(&mut self, id: NodeId, path: &str) -> Option<ApiSpec> {
        let mut fields = self.mapping(id, path)?;
        let port = match fields.take(self, path, "port") {
            Some(p) => self.port(p, &join(path, "port"), DEFAULT_API_PORT)?,
            None => DEFAULT_API_PORT,
        };
        let external_address = match fields.take(self, path, "externalAddress") {
            Some(a) => self.string(a, &join(path, "externalAddress"))?,
            None => String::new(),
        };
        let sans = match fields.take(self, path, "sans") {
            Some(s) => {
                self.string_list(s, &join(path, "sans"))?.into_iter().map(|(s, _)| s).collect()
            }
            None => Vec::new(),
        };
        Some(ApiSpec { port, external_address, sans })
    }

    fn cplb(&mut self, id: NodeId, path: &str) -> Option<Cplb> {
        let mut fields = self.mapping(id, path)?;
        let enabled = match fields.take(self, path, "enabled") {
            Some(e) => self.boolean(e, &join(path, "enabled")),
            None => Some(false),
        };
        let kind = match fields.take(self, path, "type") {
            Some(t) => {
                let kind = self.string(t, &join(path, "type"));
                match kind.as_deref() {
                    Some("" | "Keepalived") => Some("Keepalived".to_owned()),
                    Some(other) => {
                        self.error(
                            &join(path, "type"),
                            t,
                            format!(
                                "unsupported CPLB type: {other}. Only allowed value: Keepalived"
                            ),
                        );
                        None
                    }
                    None => None,
                }
            }
            None => Some("Keepalived".to_owned()),
        };
        let keepalived = match fields.take(self, path, "keepalived") {
            Some(k) => self.keepalived(k, &join(path, "keepalived")).map(Some),
            None => Some(None),
        };
        fields.reject_unknown(self, path, &["enabled", "type", "keepalived"]);
        let (enabled, kind, keepalived) = (enabled?, kind?, keepalived?);
        if enabled
            && keepalived
                .as_ref()
                .is_none_or(|k| k.vrrp_instances.is_empty() && k.virtual_servers.is_empty())
        {
            let message = "CPLB is enabled but has no vrrpInstances and no virtualServers: nothing will run (k0s only logs this)".into();
            self.push(Severity::Warning, path, fields.mark, message);
        }
        if !enabled {
            let message = "enabled is false: the block is validated, but CPLB will not run".into();
            self.push(Severity::Warning, &join(path, "enabled"), fields.mark, message);
        }
        Some(Cplb { enabled, kind, keepalived })
    }

    fn keepalived(&mut self, id: NodeId, path: &str) -> Option<Keepalived> {
        let mut fields = self.mapping(id, path)?;
        let mut ok = true;
        let instances_path = join(path, "vrrpInstances");
        let mut instances = Vec::new();
        if let Some(list) = fields.take(self, path, "vrrpInstances") {
            for (i, item) in self.list(list, &instances_path)?.into_iter().enumerate() {
                match self.instance(item, &format!("{instances_path}[{i}]"), i) {
                    Some(inst) => instances.push((inst, item)),
                    None => ok = false,
                }
            }
        }
        let servers_path = join(path, "virtualServers");
        let mut servers = Vec::new();
        if let Some(list) = fields.take(self, path, "virtualServers") {
            for (i, item) in self.list(list, &servers_path)?.into_iter().enumerate() {
                match self.virtual_server(item, &format!("{servers_path}[{i}]")) {
                    Some(vs) => servers.push((vs, item)),
                    None => ok = false,
                }
            }
        }
        let proxy_port = match fields.take(self, path, "userSpaceProxyBindPort") {
            Some(p) => self.port(p, &join(path, "userSpaceProxyBindPort"), DEFAULT_PROXY_PORT),
            None => Some(DEFAULT_PROXY_PORT),
        };
        let disable = match fields.take(self, path, "disableLoadBalancer") {
            Some(d) => self.boolean(d, &join(path, "disableLoadBalancer")),
            None => Some(false),
        };
        let template =
            |w: &mut Self, fields: &mut Fields, name: &str| match fields.take(w, path, name) {
                Some(t) => w.string(t, &join(path, name)),
                None => Some(String::new()),
            };
        let vrrp_template = template(self, &mut fields, "configTemplateVRRP");
        let vs_template = template(self, &mut fields, "configTemplateVS");
        fields.reject_unknown(
            self,
            path,
            &[
                "vrrpInstances",
                "virtualServers",
                "userSpaceProxyBindPort",
                "disableLoadBalancer",
                "configTemplateVRRP",
                "configTemplateVS",
            ],
        );
        for (name, t) in
            [("configTemplateVRRP", &vrrp_template), ("configTemplateVS", &vs_template)]
        {
            if t.as_deref().is_some_and(|t| !t.is_empty()) {
                let message = format!(
                    "{name} is a keepalived template; cplb does not run keepalived and ignores it"
                );
                self.push(Severity::Warning, &join(path, name), fields.mark, message);
            }
        }
        let (proxy_port, disable, vrrp_template, vs_template) =
            (proxy_port?, disable?, vrrp_template?, vs_template?);
        if !ok {
            return None;
        }
        self.instance_rules(&instances, &instances_path);
        self.server_rules(&servers, &instances, &servers_path);
        if disable && !servers.is_empty() {
            let message = "virtualServers are not load-balanced with disableLoadBalancer: true (only the VIPs run)".into();
            self.push(Severity::Warning, &join(path, "disableLoadBalancer"), fields.mark, message);
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

    fn instance(&mut self, id: NodeId, path: &str, index: usize) -> Option<VrrpInstance> {
        let mut f = self.mapping(id, path)?;
        let vips = self.virtual_ips(&mut f, id, path);
        let interface = match f.take(self, path, "interface") {
            Some(i) => self.string(i, &join(path, "interface")),
            None => Some(String::new()),
        };
        let vrid = self.vrid(&mut f, id, path, index);
        let advert = match f.take(self, path, "advertIntervalSeconds") {
            Some(a) => {
                let p = join(path, "advertIntervalSeconds");
                match self.int(a, &p)? {
                    0 => Some(1),
                    n @ 1..=255 => u8::try_from(n).ok(),
                    n => {
                        self.error(&p, a, format!("advertIntervalSeconds must be 1 to 255 (VRRPv2 carries whole seconds in 8 bits), got {n}"));
                        None
                    }
                }
            }
            None => Some(1),
        };
        let auth = self.auth_pass(&mut f, id, path);
        let (peers, source) = self.unicast(&mut f, path);
        let label = match f.take(self, path, "addressLabel") {
            Some(l) => {
                let p = join(path, "addressLabel");
                match self.int(l, &p)? {
                    0 => Some(DEFAULT_ADDRESS_LABEL),
                    0xffff_ffff => {
                        self.error(&p, l, "AddressLabel 0xffffffff is reserved".into());
                        None
                    }
                    n => match u32::try_from(n) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            self.error(&p, l, format!("addressLabel must be 0 to 4294967294 (an RFC 6724 label), got {n}"));
                            None
                        }
                    },
                }
            }
            None => Some(DEFAULT_ADDRESS_LABEL),
        };
        f.reject_unknown(
            self,
            path,
            &[
                "virtualIPs",
                "interface",
                "virtualRouterID",
                "advertIntervalSeconds",
                "authPass",
                "unicastPeers",
                "unicastSourceIP",
                "addressLabel",
            ],
        );
        Some(VrrpInstance {
            virtual_ips: vips?,
            interface: interface?,
            virtual_router_id: vrid?,
            advert_interval_seconds: advert?,
            auth_pass: auth?,
            unicast_peers: peers?,
            unicast_source_ip: source?,
            address_label: label?,
        })
    }

    fn virtual_ips(&mut self, f: &mut Fields, id: NodeId, path: &str) -> Option<Vec<Cidr>> {
        let p = join(path, "virtualIPs");
        let Some(list) = f.take(self, path, "virtualIPs") else {
            self.error(&p, id, "VirtualIPs must be defined: give at least one address with its prefix, e.g. [\"192.168.122.200/24\"]".into());
            return None;
        };
        let items = self.string_list(list, &p)?;
        if items.is_empty() {
            self.error(&p, list, "VirtualIPs must be defined: the list is empty".into());
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, (text, item)) in items.iter().enumerate() {
            match Cidr::parse(text) {
                Some(c) => out.push(c),
                None => {
                    let hint = if text.parse::<IpAddr>().is_ok() {
                        format!(" (add the prefix length, e.g. {text}/24)")
                    } else {
                        String::new()
                    };
                    self.error(
                        &format!("{p}[{i}]"),
                        *item,
                        format!("VirtualIPs must be a CIDR (address/prefix). Got: {text}{hint}"),
                    );
                    ok = false;
                }
            }
        }
        if ok && out.iter().any(|c| c.addr.is_ipv4()) && out.iter().any(|c| c.addr.is_ipv6()) {
            self.warn(&p, list, "mixes IPv4 and IPv6 VIPs in one instance: VRRP runs one address family per instance; use one instance per family".into());
        }
        ok.then_some(out)
    }

    fn vrid(&mut self, f: &mut Fields, id: NodeId, path: &str, index: usize) -> Option<u8> {
        let p = join(path, "virtualRouterID");
        let explicit = match f.take(self, path, "virtualRouterID") {
            Some(v) => match self.int(v, &p)? {
                0 => None,
                n @ 1..=255 => u8::try_from(n).ok(),
                n => {
                    self.error(
                        &p,
                        v,
                        format!("VirtualRouterID must be in the range of 1-255, got {n}"),
                    );
                    return None;
                }
            },
            None => None,
        };
        match explicit {
            Some(v) => Some(v),
            None => match u8::try_from(FIRST_AUTO_VRID + index) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(&p, id, "automatic virtualRouterIDs exceeded, specify them explicitly (51 + index passes 255)".into());
                    None
                }
            },
        }
    }

    fn auth_pass(&mut self, f: &mut Fields, id: NodeId, path: &str) -> Option<String> {
        let p = join(path, "authPass");
        let Some(a) = f.take(self, path, "authPass") else {
            self.error(&p, id, "AuthPass must be defined: the VRRP password, 1 to 8 characters, the same on every controller".into());
            return None;
        };
        let pass = self.string(a, &p)?;
        if pass.is_empty() {
            self.error(&p, a, "AuthPass must be defined: it is empty".into());
            return None;
        }
        if pass.len() > 8 {
            self.error(
                &p,
                a,
                format!(
                    "AuthPass must be 8 characters or less: got {} bytes; VRRPv2 carries only 8",
                    pass.len()
                ),
            );
            return None;
        }
        Some(pass)
    }

    fn unicast(
        &mut self,
        f: &mut Fields,
        path: &str,
    ) -> (Option<Vec<IpAddr>>, Option<Option<IpAddr>>) {
        let peers_path = join(path, "unicastPeers");
        let source_path = join(path, "unicastSourceIP");
        let peers_id = f.take(self, path, "unicastPeers");
        let source_id = f.take(self, path, "unicastSourceIP");
        let source_text = match source_id {
            Some(s) => match self.string(s, &source_path) {
                Some(t) => Some((t, s)),
                None => return (None, None),
            },
            None => None,
        };
        let items = match peers_id {
            Some(list) => match self.string_list(list, &peers_path) {
                Some(items) => items,
                None => return (None, None),
            },
            None => Vec::new(),
        };
        let mut peers = Vec::new();
        let mut ok = true;
        for (i, (text, item)) in items.iter().enumerate() {
            match text.parse::<IpAddr>() {
                Ok(ip) if peers.contains(&ip) => {
                    self.error(
                        &format!("{peers_path}[{i}]"),
                        *item,
                        format!("unicast peer {ip} is listed twice"),
                    );
                    ok = false;
                }
                Ok(ip) => peers.push(ip),
                Err(_) => {
                    self.error(&format!("{peers_path}[{i}]"), *item, format!("UnicastPeers require valid IP addresses: {text:?} is not one (no names, no prefix)"));
                    ok = false;
                }
            }
        }
        let source = match source_text {
            Some((t, _)) if t.is_empty() => None,
            Some((t, s)) => match t.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) if peers.is_empty() => {
                    self.warn(
                        &source_path,
                        s,
                        format!("{t:?} is not an IP address; it is ignored without unicastPeers"),
                    );
                    None
                }
                Err(_) => {
                    self.error(&source_path, s, format!("UnicastPeers require a valid UnicastSourceIP: {t:?} is not an IP address"));
                    return (None, None);
                }
            },
            None => None,
        };
        if !peers.is_empty() {
            match (source, source_id.or(peers_id)) {
                (None, Some(at)) => {
                    self.error(&source_path, at, "UnicastPeers require a valid UnicastSourceIP: set it to this node's own address on the interface".into());
                    ok = false;
                }
                (Some(src), Some(at)) => {
                    if peers.contains(&src) {
                        self.error(&peers_path, at, format!("UnicastPeers must not contain the UnicastSourceIP ({src}): list the other controllers only"));
                        ok = false;
                    }
                    if let Some(p) = peers.iter().find(|p| p.is_ipv4() != src.is_ipv4()) {
                        self.error(&peers_path, at, format!("unicast peer {p} and unicastSourceIP {src} are of different address families"));
                        ok = false;
                    }
                }
                _ => {}
            }
        } else if let (Some(_), Some(s)) = (source, source_id) {
            self.warn(
                &source_path,
                s,
                "unicastSourceIP has no effect without unicastPeers (multicast is used)".into(),
            );
        }
        (ok.then_some(peers), Some(source))
    }

    fn virtual_server(&mut self, id: NodeId, path: &str) -> Option<VirtualServer> {
        let mut f = self.mapping(id, path)?;
        let ip_path = join(path, "ipAddress");
        let ip = match f.take(self, path, "ipAddress") {
            Some(a) => self.string(a, &ip_path).and_then(|t| match t.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) if t.is_empty() => {
                    self.error(&ip_path, a, "IPAddress must be defined".into());
                    None
                }
                Err(_) => {
                    let hint = if Cidr::parse(&t).is_some() {
                        " (a bare IP, without the prefix length)"
                    } else {
                        ""
                    };
                    self.error(&ip_path, a, format!("invalid IP address {t:?}{hint}"));
                    None
                }
            }),
            None => {
                self.error(
                    &ip_path,
                    id,
                    "IPAddress must be defined: the VIP this virtual server listens on".into(),
                );
                None
            }
        };
        let delay = match f.take(self, path, "delayLoop") {
            Some(d) => self.delay_loop(d, &join(path, "delayLoop")),
            None => Some(DEFAULT_DELAY_LOOP),
        };
        let algo = match f.take(self, path, "lbAlgo") {
            Some(a) => {
                self.enumerated(a, &join(path, "lbAlgo"), "LBAlgo", &LbAlgo::ALL, |x| x.as_str())
            }
            None => Some(LbAlgo::Rr),
        };
        let kind = match f.take(self, path, "lbKind") {
            Some(k) => {
                self.enumerated(k, &join(path, "lbKind"), "LBKind", &LbKind::ALL, |x| x.as_str())
            }
            None => Some(LbKind::Dr),
        };
        let persistence = match f.take(self, path, "persistenceTimeoutSeconds") {
            Some(p) => {
                let pp = join(path, "persistenceTimeoutSeconds");
                match self.int(p, &pp)? {
                    0 => Some(DEFAULT_PERSISTENCE),
                    n @ 1..=MAX_PERSISTENCE => u32::try_from(n).ok(),
                    n => {
                        self.error(&pp, p, format!("PersistenceTimeout must be in the range of 1-2678400 (31 days), got {n}"));
                        None
                    }
                }
            }
            None => Some(DEFAULT_PERSISTENCE),
        };
        f.reject_unknown(
            self,
            path,
            &["ipAddress", "delayLoop", "lbAlgo", "lbKind", "persistenceTimeoutSeconds"],
        );
        Some(VirtualServer {
            ip_address: ip?,
            delay_loop: delay?,
            lb_algo: algo?,
            lb_kind: kind?,
            persistence_timeout_seconds: persistence?,
        })
    }

    fn delay_loop(&mut self, id: NodeId, path: &str) -> Option<Duration> {
        let Some((raw, plain)) = self.doc.scalar(id) else {
            let what = self.doc.describe(id);
            self.error(
                path,
                id,
                format!("delayLoop must be a duration such as \"1m\" or \"30s\", got {what}"),
            );
            return None;
        };
        if plain && matches!(resolve(raw), Plain::Int(_) | Plain::Float(_)) {
            self.error(path, id, format!("delayLoop must be a duration with a unit, such as \"{raw}s\"; got the number {raw}"));
            return None;
        }
        if plain && resolve(raw) == Plain::Null {
            return Some(DEFAULT_DELAY_LOOP);
        }
        let ns = match parse_go_duration(raw) {
            Ok(ns) => ns,
            Err(e) => {
                self.error(
                    path,
                    id,
                    format!("delayLoop: {e} (units: ns, us, ms, s, m, h; e.g. \"1m\", \"1.5s\")"),
                );
                return None;
            }
        };
        if ns == 0 {
            return Some(DEFAULT_DELAY_LOOP);
        }
        let micros = ns / 1_000;
        if micros <= 0 {
            self.error(path, id, format!("DelayLoop must be positive, got {raw:?}"));
            return None;
        }
        if ns % 1_000 != 0 {
            self.warn(
                path,
                id,
                format!(
                    "delayLoop {raw:?} is truncated to whole microseconds ({micros}µs), as k0s does"
                ),
            );
        }
        let delay = Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX));
        if delay < crate::lb::MIN_HEALTH_INTERVAL {
            self.warn(
                path,
                id,
                format!("delayLoop {raw:?} is below 100ms: cplb health-checks at most every 100ms"),
            );
        }
        Some(delay)
    }

    /// Rules that compare instances: unique VRIDs (explicit or automatic) and unique VIPs.
    fn instance_rules(&mut self, instances: &[(VrrpInstance, NodeId)], path: &str) {
        for (i, (inst, id)) in instances.iter().enumerate() {
            let earlier = instances.get(..i).unwrap_or_default();
            if let Some(j) =
                earlier.iter().position(|(o, _)| o.virtual_router_id == inst.virtual_router_id)
            {
                let vrid = inst.virtual_router_id;
                self.error(
                    &format!("{path}[{i}].virtualRouterID"),
                    *id,
                    format!("virtualRouterID {vrid} is also used by vrrpInstances[{j}]: every instance needs its own VRID (an unset one is 51 + its index)"),
                );
            }
            for vip in &inst.virtual_ips {
                if let Some(j) = earlier
                    .iter()
                    .position(|(o, _)| o.virtual_ips.iter().any(|v| v.addr == vip.addr))
                {
                    self.error(
                        &format!("{path}[{i}].virtualIPs"),
                        *id,
                        format!("VIP {} is also in vrrpInstances[{j}]: two instances would fight over it", vip.addr),
                    );
                }
            }
        }
    }

    /// Rules for virtual servers against the instances: each listens on a VIP, once.
    fn server_rules(
        &mut self,
        servers: &[(VirtualServer, NodeId)],
        instances: &[(VrrpInstance, NodeId)],
        path: &str,
    ) {
        for (i, (vs, id)) in servers.iter().enumerate() {
            let ip = vs.ip_address;
            if !instances.iter().any(|(inst, _)| inst.virtual_ips.iter().any(|v| v.addr == ip)) {
                let vips: Vec<String> = instances
                    .iter()
                    .flat_map(|(inst, _)| inst.virtual_ips.iter().map(|v| v.addr.to_string()))
                    .collect();
                let known = if vips.is_empty() {
                    "there are no VIPs".to_owned()
                } else {
                    format!("the VIPs are {}", vips.join(", "))
                };
                self.error(&format!("{path}[{i}].ipAddress"), *id, format!("{ip} is not one of the VRRP instances' virtualIPs ({known}): no node would own it"));
            }
            if servers.get(..i).unwrap_or_default().iter().any(|(o, _)| o.ip_address == ip) {
                self.error(
                    &format!("{path}[{i}].ipAddress"),
                    *id,
                    format!("a virtual server for {ip} is already defined"),
                );
            }
        }
    }

    /// Rules across `spec`: `--single`, and externalAddress with virtual servers.
    fn cross_spec_rules(
        &mut self,
        cplb: &Cplb,
        api: &ApiSpec,
        cplb_path: &str,
        mark: Mark,
        single: bool,
        spec_path: &str,
    ) {
        if single && cplb.enabled {
            let message =
                "control plane load balancing cannot be used in a single-node cluster (--single)"
                    .into();
            self.push(Severity::Error, &join(cplb_path, "enabled"), mark, message);
        }
        let has_servers = cplb.keepalived.as_ref().is_some_and(|k| !k.virtual_servers.is_empty());
        if has_servers && !api.external_address.is_empty() {
            let message = format!(
                "{spec_path}.api.externalAddress ({}) and virtual servers cannot be used together: remove one",
                api.external_address
            );
            self.push(
                Severity::Error,
                &join(cplb_path, "keepalived.virtualServers"),
                mark,
                message,
            );
        }
    }

    // --- scalar readers -------------------------------------------------------------------

    /// A string field, read as k0s reads it (a plain `0123` becomes "83").
    fn string(&mut self, id: NodeId, path: &str) -> Option<String> {
        let Some((raw, plain)) = self.doc.scalar(id) else {
            let what = self.doc.describe(id);
            self.error(path, id, format!("must be a string, got {what}"));
            return None;
        };
        if !plain {
            return Some(raw.to_owned());
        }
        let value = as_go_string(raw);
        let kind = match resolve(raw) {
            Plain::Bool(_) => Some("a boolean"),
            Plain::Int(_) => Some("an integer"),
            Plain::Float(_) => Some("a number"),
            Plain::Null | Plain::Str => None,
        };
        if let Some(kind) = kind
            && value != raw
        {
            self.warn(path, id, format!("k0s reads the unquoted {raw} as {kind} and uses the text {value:?}; quote it ('{raw}') to mean {raw:?}"));
        }
        Some(value)
    }

    fn int(&mut self, id: NodeId, path: &str) -> Option<i128> {
        let Some((raw, plain)) = self.doc.scalar(id) else {
            let what = self.doc.describe(id);
            self.error(path, id, format!("must be a number, got {what}"));
            return None;
        };
        if !plain {
            self.error(path, id, format!("must be a number, got the quoted string {raw:?}: remove the quotes (k0s rejects it too)"));
            return None;
        }
        match resolve(raw) {
            Plain::Null => Some(0),
            Plain::Int(i) => {
                let digits = raw.trim_start_matches(['+', '-']);
                if digits.len() > 1
                    && digits.starts_with('0')
                    && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
                {
                    self.warn(
                        path,
                        id,
                        format!("{raw} has a leading zero: YAML 1.1 (k0s) reads it as octal {i}"),
                    );
                }
                Some(i)
            }
            Plain::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                self.warn(
                    path,
                    id,
                    format!("{raw} is read as the whole number {f}; write it without a fraction"),
                );
                Some(f as i128)
            }
            Plain::Float(_) => {
                self.error(path, id, format!("must be a whole number, got {raw}"));
                None
            }
            Plain::Bool(_) | Plain::Str => {
                self.error(path, id, format!("must be a number, got {raw:?}"));
                None
            }
        }
    }

    fn port(&mut self, id: NodeId, path: &str, default: u16) -> Option<u16> {
        match self.int(id, path)? {
            0 => Some(default),
            n @ 1..=65_535 => u16::try_from(n).ok(),
            n => {
                let field = path.rsplit('.').next().unwrap_or(path);
                self.error(path, id, format!("{field} must be in the range of 1-65535, got {n}"));
                None
            }
        }
    }

    fn boolean(&mut self, id: NodeId, path: &str) -> Option<bool> {
        let Some((raw, plain)) = self.doc.scalar(id) else {
            let what = self.doc.describe(id);
            self.error(path, id, format!("must be true or false, got {what}"));
            return None;
        };
        if !plain {
            self.error(
                path,
                id,
                format!("must be true or false, got the quoted string {raw:?}: remove the quotes"),
            );
            return None;
        }
        match resolve(raw) {
            Plain::Null => Some(false),
            Plain::Bool(b) => {
                if raw != "true" && raw != "false" {
                    self.warn(path, id, format!("k0s (YAML 1.1) reads {raw} as {b}; YAML 1.2 tools read it as a string; write {b}"));
                }
                Some(b)
            }
            _ => {
                self.error(path, id, format!("must be true or false, got {raw}"));
                None
            }
        }
    }

    /// A list; an empty plain scalar (`key:`) is an empty list.
    fn list(&mut self, id: NodeId, path: &str) -> Option<Vec<NodeId>> {
        if let Some(items) = self.doc.items(id) {
            return Some(items.to_vec());
        }
        if let Some((raw, true)) = self.doc.scalar(id)
            && resolve(raw) == Plain::Null
        {
            return Some(Vec::new());
        }
        let what = self.doc.describe(id);
        self.error(path, id, format!("must be a list (- item, or [a, b]), got {what}"));
        None
    }

    fn string_list(&mut self, id: NodeId, path: &str) -> Option<Vec<(String, NodeId)>> {
        let items = self.list(id, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.into_iter().enumerate() {
            match self.string(item, &format!("{path}[{i}]")) {
                Some(s) => out.push((s, item)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn enumerated<T: Copy>(
        &mut self,
        id: NodeId,
        path: &str,
        what: &str,
        all: &[T],
        name: impl Fn(T) -> &'static str,
    ) -> Option<T> {
        let text = self.string(id, path)?;
        if let Some(v) = all.iter().copied().find(|v| name(*v) == text) {
            return Some(v);
        }
        let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
        let hint = match all.iter().copied().find(|v| name(*v).eq_ignore_ascii_case(&text)) {
            Some(v) => format!("; did you mean {:?}?", name(v)),
            None => String::new(),
        };
        self.error(path, id, format!("invalid {what}: {text} (one of {}){hint}", names.join(", ")));
        None
    }
}
