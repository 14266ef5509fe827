//! Deterministic synthetic CMDB estates: the shipped example (`config/cmdb.yaml`)
//! and scaled-up topologies of the same shape for benchmarks. `yaml` writes
//! them in the shipped file's style.
//!
//! Per site: a site CI, a WAN router, a firewall, core switches (meshed:
//! `connects_to` each other, a cycle), a load balancer, a SAN, access switches
//! (each `connects_to` every core), bare-metal hosts and hypervisors on the
//! access switches (hypervisors also `depends_on` the SAN) and VMs spread over
//! the hypervisors. Applications run on VMs in two sites, depend on their
//! databases (primary and standby, each on a VM) and on the load balancer (and
//! firewall for internet-facing ones) of their home site; business services
//! depend on applications. Redundancy groups: the core switches of a site
//! (`core-<site>`) and each primary/standby database pair (`<primary>-pair`),
//! each needing one member up.

use chrono::{DateTime, TimeZone, Utc};

mod yaml;

pub use self::yaml::{example_yaml, write_yaml};

use triaged::topology::{CiSpec, CiType, CmdbFile, Criticality, GroupSpec, MaintenanceWindow};

/// Shape of a synthetic estate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenParams {
    pub sites: usize,
    pub cores_per_site: usize,
    pub access_per_site: usize,
    /// Bare-metal hosts per access switch.
    pub hosts_per_access: usize,
    pub hypervisors_per_access: usize,
    pub vms_per_hypervisor: usize,
    /// Applications; the first 16 come from a realistic catalog, the rest are numbered.
    pub apps: usize,
    /// Business services; the first 8 come from the catalog, the rest are numbered.
    pub services: usize,
    /// Add the two illustrative maintenance windows (one expired, one in 2030).
    pub maintenance: bool,
}

impl GenParams {
    /// The shipped example: three sites (par1, fra1, lon1), 16 applications,
    /// 8 business services, a bit over 200 CIs.
    pub fn example() -> GenParams {
        GenParams {
            sites: 3,
            cores_per_site: 2,
            access_per_site: 4,
            hosts_per_access: 1,
            hypervisors_per_access: 2,
            vms_per_hypervisor: 4,
            apps: CATALOG_APPS.len(),
            services: CATALOG_SERVICES.len(),
            maintenance: true,
        }
    }

    /// Roughly `n` CIs with the example's shape (more sites, bigger sites,
    /// more applications and services).
    pub fn scaled(n: usize) -> GenParams {
        let apps = (n / 25).max(CATALOG_APPS.len());
        let services = (apps / 10).max(CATALOG_SERVICES.len());
        let mut p = GenParams {
            sites: ((n as f64).sqrt() / 4.0).round().clamp(3.0, 250.0) as usize,
            cores_per_site: 2,
            access_per_site: 1,
            hosts_per_access: 1,
            hypervisors_per_access: 4,
            vms_per_hypervisor: 10,
            apps,
            services,
            maintenance: true,
        };
        let app_cis = p.ci_count() - p.sites * p.per_site();
        let per_site = n.saturating_sub(app_cis) / p.sites;
        let fixed = p.per_site() - p.per_access();
        // Access switches of the standard size, then VMs per hypervisor to fit the budget.
        let budget = per_site.saturating_sub(fixed) as f64;
        p.access_per_site = ((budget / p.per_access() as f64).round() as usize).max(1);
        let per_access = budget / p.access_per_site as f64 - (1 + p.hosts_per_access) as f64;
        p.vms_per_hypervisor = (per_access / p.hypervisors_per_access as f64 - 1.0).round().clamp(1.0, 20.0) as usize;
        p
    }

    fn per_access(&self) -> usize {
        1 + self.hosts_per_access + self.hypervisors_per_access * (1 + self.vms_per_hypervisor)
    }

    /// CIs of one site.
    fn per_site(&self) -> usize {
        // site, router, firewall, load balancer, SAN + cores + access blocks
        5 + self.cores_per_site + self.access_per_site * self.per_access()
    }

    /// Exactly how many CIs [`synthetic`] generates for these parameters.
    pub fn ci_count(&self) -> usize {
        let dbs = if self.sites == 0 { 0 } else { (0..self.apps).filter(|&i| app_has_db(i)).count() };
        self.sites * self.per_site() + self.apps + 2 * dbs + self.services
    }
}

const SITE_CODES: [&str; 28] = [
    "par", "fra", "lon", "ams", "mad", "mil", "dub", "sto", "waw", "vie", "zrh", "bru", "lis", "cph", "hel", "osl", "prg", "nyc", "chi",
    "dal", "sfo", "sea", "tor", "sao", "sin", "hkg", "tyo", "syd",
];

/// `par1`, `fra1`, `lon1`, ..., `syd1`, `par2`, ...
fn site_code(s: usize) -> String {
    format!("{}{}", SITE_CODES[s % SITE_CODES.len()], s / SITE_CODES.len() + 1)
}

struct ServiceDef {
    name: &'static str,
    team: &'static str,
    criticality: Criticality,
    apps: &'static [usize],
}

const CATALOG_SERVICES: [ServiceDef; 8] = [
    ServiceDef { name: "payments", team: "payments-dev", criticality: Criticality::Critical, apps: &[0, 1, 2] },
    ServiceDef { name: "online-banking", team: "ebanking-dev", criticality: Criticality::Critical, apps: &[3, 4, 5] },
    ServiceDef { name: "crm", team: "crm-dev", criticality: Criticality::High, apps: &[6, 5] },
    ServiceDef { name: "email", team: "messaging-ops", criticality: Criticality::High, apps: &[7, 8] },
    ServiceDef { name: "erp", team: "erp-dev", criticality: Criticality::High, apps: &[9, 10, 5] },
    ServiceDef { name: "hr-portal", team: "hr-apps", criticality: Criticality::Low, apps: &[11, 5] },
    ServiceDef { name: "trading", team: "trading-dev", criticality: Criticality::Critical, apps: &[12, 13] },
    ServiceDef { name: "data-warehouse", team: "data-platform", criticality: Criticality::Medium, apps: &[14, 15] },
];

#[derive(Clone, Copy)]
enum Engine {
    Postgres,
    Oracle,
}

impl Engine {
    fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Oracle => "oracle",
        }
    }
}

struct AppDef {
    name: &'static str,
    team: &'static str,
    criticality: Criticality,
    /// Database code and engine (`db-<code>-<site>-NN`).
    db: Option<(&'static str, Engine)>,
    /// Other catalog applications it calls.
    deps: &'static [usize],
    /// Catalog applications whose standby database it reads.
    reads_standby_of: &'static [usize],
    /// Internet facing: also depends on the home site's firewall.
    edge: bool,
}

const fn app(
    name: &'static str,
    team: &'static str,
    criticality: Criticality,
    db: Option<(&'static str, Engine)>,
    deps: &'static [usize],
    edge: bool,
) -> AppDef {
    AppDef { name, team, criticality, db, deps, reads_standby_of: &[], edge }
}

use Criticality::{Critical, High, Low, Medium};

const CATALOG_APPS: [AppDef; 16] = [
    app("payments-api", "payments-dev", Critical, Some(("pay", Engine::Postgres)), &[], false),
    app("payments-gateway", "payments-dev", Critical, None, &[0, 2], true),
    app("fraud-scoring", "payments-dev", High, Some(("fraud", Engine::Postgres)), &[], false),
    app("ebanking-web", "ebanking-dev", Critical, None, &[4, 5], true),
    app("ebanking-api", "ebanking-dev", Critical, Some(("bank", Engine::Oracle)), &[0], false),
    app("auth-sso", "identity-ops", Critical, Some(("sso", Engine::Postgres)), &[], true),
    app("crm", "crm-dev", High, Some(("crm", Engine::Oracle)), &[5], false),
    app("mail-gateway", "messaging-ops", High, None, &[8], true),
    app("mail-store", "messaging-ops", High, Some(("mail", Engine::Postgres)), &[], false),
    app("erp", "erp-dev", High, Some(("erp", Engine::Oracle)), &[], false),
    app("erp-batch", "erp-dev", Medium, None, &[9], false),
    app("hr-portal", "hr-apps", Low, Some(("hr", Engine::Postgres)), &[5], true),
    app("trading-engine", "trading-dev", Critical, Some(("trd", Engine::Oracle)), &[13], false),
    app("market-data", "trading-dev", High, None, &[], false),
    AppDef {
        name: "dwh-etl",
        team: "data-platform",
        criticality: Medium,
        db: Some(("dwh", Engine::Postgres)),
        deps: &[],
        reads_standby_of: &[0, 6],
        edge: false,
    },
    app("dwh-reporting", "data-platform", Medium, None, &[14], false),
];

const EXTRA_WORDS: [&str; 20] = [
    "billing",
    "loans",
    "cards",
    "insurance",
    "logistics",
    "analytics",
    "marketing",
    "treasury",
    "compliance",
    "mortgages",
    "wealth",
    "claims",
    "procurement",
    "payroll",
    "catalog",
    "search",
    "checkout",
    "notifications",
    "reporting",
    "onboarding",
];

fn app_has_db(i: usize) -> bool {
    match CATALOG_APPS.get(i) {
        Some(a) => a.db.is_some(),
        None => i % 3 != 2,
    }
}

/// Name part of business service `s` (`payments`, `billing-0012`).
fn service_name(s: usize) -> String {
    match CATALOG_SERVICES.get(s) {
        Some(d) => d.name.to_string(),
        None => format!("{}-{s:04}", EXTRA_WORDS[(s - CATALOG_SERVICES.len()) % EXTRA_WORDS.len()]),
    }
}

fn extra_criticality(i: usize) -> Criticality {
    [Critical, High, Medium, Low][i % 4]
}

/// Addresses in 10.0.0.0/8: per site `10.<site+1>.x.y` with network gear in
/// x = 0..3, hosts and hypervisors in 4..15 and VMs from 16; one global
/// sequence when the estate does not fit that plan. Never `.0` or `.255`.
struct IpPlan {
    per_site: bool,
    next: Vec<[usize; 3]>,
    global: usize,
}

const REGION_START: [usize; 3] = [0, 4 * 254, 16 * 254];
const REGION_END: [usize; 3] = [4 * 254, 16 * 254, 256 * 254];

impl IpPlan {
    fn new(p: &GenParams) -> IpPlan {
        let net = 5 + p.cores_per_site + p.access_per_site;
        let hosts = p.access_per_site * (p.hosts_per_access + p.hypervisors_per_access);
        let vms = p.access_per_site * p.hypervisors_per_access * p.vms_per_hypervisor;
        let per_site = p.sites <= 254
            && net <= REGION_END[0] - REGION_START[0]
            && hosts <= REGION_END[1] - REGION_START[1]
            && vms <= REGION_END[2] - REGION_START[2];
        IpPlan { per_site, next: vec![REGION_START; p.sites], global: 0 }
    }

    /// Next address for `site` in `region` (0 network, 1 hosts, 2 VMs).
    fn next(&mut self, site: usize, region: usize) -> String {
        let (second, off) = if self.per_site {
            let off = self.next[site][region];
            self.next[site][region] += 1;
            (site + 1, off)
        } else {
            let off = self.global;
            self.global += 1;
            (off / (256 * 254), off % (256 * 254))
        };
        format!("10.{second}.{}.{}", off / 254, off % 254 + 1)
    }
}

fn s(v: &str) -> String {
    v.to_string()
}

fn runbook(path: &str) -> Option<String> {
    Some(format!("https://runbooks.example.net/{path}"))
}

/// A CI with owner, on-call rotation, runbook and criticality.
fn ci(id: String, kind: CiType, owner: &str, runbook_path: &str, criticality: Criticality) -> CiSpec {
    let mut c = CiSpec::new(id.clone(), id, kind);
    c.owner_group = Some(s(owner));
    c.oncall = Some(oncall_of(owner));
    c.runbook = runbook(runbook_path);
    c.criticality = Some(criticality);
    c
}

fn oncall_of(team: &str) -> String {
    let base = team.strip_suffix("-ops").or_else(|| team.strip_suffix("-dev")).unwrap_or(team);
    format!("{base}-oncall")
}

/// A site-bound CI: `site` set, FQDN alias, an IP from `region` if given.
fn site_ci(mut c: CiSpec, code: &str, ip: Option<String>) -> CiSpec {
    c.aliases = vec![format!("{}.{code}.example.net", c.name)];
    c.ips = ip.into_iter().collect();
    c.site = Some(code.to_string());
    c
}

fn width(count: usize, min: usize) -> usize {
    count.to_string().len().max(min)
}

fn ts(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).single().expect("valid timestamp")
}

/// Generates the estate described by `p`. Deterministic: same parameters, same output.
pub fn synthetic(p: &GenParams) -> CmdbFile {
    let mut cis: Vec<CiSpec> = Vec::with_capacity(p.ci_count());
    let mut ips = IpPlan::new(p);
    let codes: Vec<String> = (0..p.sites).map(site_code).collect();
    let hv_per_site = p.access_per_site * p.hypervisors_per_access;
    let vms_per_site = hv_per_site * p.vms_per_hypervisor;
    let (wa, wh, wv) = (width(p.access_per_site, 2), width(hv_per_site, 2), width(vms_per_site, 4));
    let wb = width(p.access_per_site * p.hosts_per_access, 2);
    let wc = width(p.cores_per_site, 2);
    let mut groups: Vec<GroupSpec> = Vec::new();

    for (si, code) in codes.iter().enumerate() {
        let site_id = format!("site-{code}");
        let mut site = ci(site_id.clone(), CiType::Site, "facilities", "facilities/datacenter", Critical);
        site.aliases = vec![code.clone()];
        site.site = Some(code.clone());
        cis.push(site);

        let cores: Vec<String> = (1..=p.cores_per_site).map(|k| format!("sw-core-{code}-{k:0wc$}")).collect();
        if cores.len() >= 2 {
            groups.push(GroupSpec { id: format!("core-{code}"), members: cores.clone(), min_up: 1 });
        }
        let rtr = format!("rtr-{code}-01");
        let mut c = ci(rtr, CiType::Router, "network-ops", "network/wan-router", High);
        c.connects_to = cores.clone();
        cis.push(site_ci(c, code, Some(ips.next(si, 0))));
        let mut c = ci(format!("fw-{code}-01"), CiType::Firewall, "security-ops", "security/firewall", Critical);
        c.connects_to = cores.clone();
        cis.push(site_ci(c, code, Some(ips.next(si, 0))));
        for (k, core) in cores.iter().enumerate() {
            let mut c = ci(core.clone(), CiType::Switch, "network-ops", "network/core-switch", Critical);
            c.depends_on = vec![site_id.clone()];
            c.connects_to = cores.iter().enumerate().filter(|&(o, _)| o != k).map(|(_, id)| id.clone()).collect();
            cis.push(site_ci(c, code, Some(ips.next(si, 0))));
        }
        let mut c = ci(format!("lb-{code}-01"), CiType::LoadBalancer, "network-ops", "network/load-balancer", High);
        c.connects_to = cores.clone();
        cis.push(site_ci(c, code, Some(ips.next(si, 0))));
        let san = format!("san-{code}-01");
        let mut c = ci(san.clone(), CiType::Storage, "storage-ops", "storage/san-array", Critical);
        c.depends_on = vec![site_id.clone()];
        c.connects_to = cores.clone();
        cis.push(site_ci(c, code, Some(ips.next(si, 0))));

        let access: Vec<String> = (1..=p.access_per_site).map(|a| format!("sw-acc-{code}-{a:0wa$}")).collect();
        for acc in &access {
            let mut c = ci(acc.clone(), CiType::Switch, "network-ops", "network/access-switch", High);
            c.connects_to = cores.clone();
            cis.push(site_ci(c, code, Some(ips.next(si, 0))));
        }
        for b in 0..p.access_per_site * p.hosts_per_access {
            let mut c = ci(format!("bm-{code}-{:0wb$}", b + 1), CiType::Host, "linux-ops", "linux/bare-metal", Low);
            c.connects_to = vec![access[b / p.hosts_per_access].clone()];
            cis.push(site_ci(c, code, Some(ips.next(si, 1))));
        }
        for h in 0..hv_per_site {
            let mut c = ci(format!("hv-{code}-{:0wh$}", h + 1), CiType::Hypervisor, "virtualization", "virtualization/hypervisor", High);
            c.connects_to = vec![access[h / p.hypervisors_per_access].clone()];
            c.depends_on = vec![san.clone()];
            cis.push(site_ci(c, code, Some(ips.next(si, 1))));
        }
        // VM k runs on hypervisor k mod n: consecutive VMs land on different hosts.
        for v in 0..vms_per_site {
            let mut c = ci(format!("vm-{code}-{:0wv$}", v + 1), CiType::Vm, "linux-ops", "linux/vm", Medium);
            c.runs_on = vec![format!("hv-{code}-{:0wh$}", v % hv_per_site + 1)];
            cis.push(site_ci(c, code, Some(ips.next(si, 2))));
        }
    }

    // Applications and their databases, VMs handed out round robin per site.
    let mut next_vm = vec![0usize; p.sites];
    let mut alloc_vm = |site: usize| -> Option<String> {
        if vms_per_site == 0 {
            return None;
        }
        let v = next_vm[site] % vms_per_site;
        next_vm[site] += 1;
        Some(format!("vm-{}-{:0wv$}", codes[site], v + 1))
    };
    let mut db_seq = std::collections::HashMap::<(String, usize), usize>::new();
    let mut dbs: Vec<CiSpec> = Vec::new();
    let mut apps: Vec<CiSpec> = Vec::with_capacity(p.apps);
    // Database ids per app: (primary, standby).
    let mut app_dbs: Vec<Option<(String, String)>> = Vec::with_capacity(p.apps);
    for i in 0..p.apps {
        let (name, team, crit, db, edge) = match CATALOG_APPS.get(i) {
            Some(a) => (s(a.name), s(a.team), a.criticality, a.db.map(|(c, e)| (s(c), e)), a.edge),
            None => {
                let svc = extra_service_of(i, p.services);
                let (word, team, crit) = match CATALOG_SERVICES.get(svc) {
                    Some(d) => (d.name, s(d.team), d.criticality),
                    None => {
                        let w = EXTRA_WORDS[(svc - CATALOG_SERVICES.len()) % EXTRA_WORDS.len()];
                        (w, format!("{w}-dev"), extra_criticality(svc))
                    }
                };
                let db = app_has_db(i).then(|| (format!("{word}{i:05}"), if i % 2 == 0 { Engine::Postgres } else { Engine::Oracle }));
                (format!("{word}-{i:05}"), team, crit, db, i % 5 == 0)
            }
        };
        let id = format!("app-{name}");
        let mut c = ci(id, CiType::Application, &team, &format!("apps/{name}"), crit);
        c.aliases = vec![format!("{name}.apps.example.net")];
        let home = (p.sites > 0).then(|| i % p.sites);
        if let Some(h) = home {
            c.site = Some(codes[h].clone());
            let second = (h + 1) % p.sites;
            c.runs_on = [alloc_vm(h), alloc_vm(second)].into_iter().flatten().collect();
            c.runs_on.dedup();
        }
        match (db, home) {
            (Some((code, engine)), Some(h)) => {
                let mut pair = Vec::new();
                for site in [h, (h + 1) % p.sites] {
                    let seq = db_seq.entry((code.clone(), site)).or_insert(0);
                    *seq += 1;
                    let db_id = format!("db-{code}-{}-{:02}", codes[site], seq);
                    let db_crit = if crit == Critical { Critical } else { High };
                    let mut d = ci(db_id.clone(), CiType::Database, "dba", &format!("dba/{}", engine.as_str()), db_crit);
                    d.runs_on = alloc_vm(site).into_iter().collect();
                    dbs.push(site_ci(d, &codes[site], None));
                    pair.push(db_id);
                }
                let standby = pair.pop().expect("two databases");
                let primary = pair.pop().expect("two databases");
                c.depends_on.push(primary.clone());
                c.depends_on.push(standby.clone());
                groups.push(GroupSpec { id: format!("{primary}-pair"), members: vec![primary.clone(), standby.clone()], min_up: 1 });
                app_dbs.push(Some((primary, standby)));
            }
            _ => app_dbs.push(None),
        }
        if let Some(h) = home {
            c.depends_on.push(format!("lb-{}-01", codes[h]));
            if edge {
                c.depends_on.push(format!("fw-{}-01", codes[h]));
            }
        }
        if let Some(a) = CATALOG_APPS.get(i) {
            for &d in a.deps.iter().filter(|&&d| d < p.apps) {
                c.depends_on.push(format!("app-{}", CATALOG_APPS[d].name));
            }
            for &d in a.reads_standby_of.iter().filter(|&&d| d < i) {
                if let Some((_, standby)) = &app_dbs[d] {
                    c.depends_on.push(standby.clone());
                }
            }
        } else if i % 4 == 3 {
            c.depends_on.push(apps[i - 1].id.clone());
        }
        apps.push(c);
    }

    // Business services.
    let mut members: Vec<Vec<String>> = vec![Vec::new(); p.services];
    for (i, a) in apps.iter().enumerate() {
        if i < CATALOG_APPS.len() || p.services == 0 {
            continue;
        }
        members[extra_service_of(i, p.services)].push(a.id.clone());
    }
    let mut services = Vec::with_capacity(p.services);
    for (si, extra) in members.into_iter().enumerate() {
        let name = service_name(si);
        let (team, crit, mut deps) = match CATALOG_SERVICES.get(si) {
            Some(d) => (
                s(d.team),
                d.criticality,
                d.apps.iter().filter(|&&a| a < p.apps).map(|&a| format!("app-{}", CATALOG_APPS[a].name)).collect(),
            ),
            None => {
                let word = EXTRA_WORDS[(si - CATALOG_SERVICES.len()) % EXTRA_WORDS.len()];
                (format!("{word}-dev"), extra_criticality(si), Vec::new())
            }
        };
        deps.extend(extra);
        let mut c = ci(format!("bs-{name}"), CiType::BusinessService, &team, &format!("services/{name}"), crit);
        c.aliases = vec![format!("{name}.example.net")];
        c.depends_on = deps;
        services.push(c);
    }

    cis.extend(dbs);
    cis.extend(apps);
    cis.extend(services);

    if p.maintenance && p.sites > 0 {
        let code = &codes[0];
        let vm = format!("vm-{code}-{:0wv$}", 7.min(vms_per_site));
        if let Some(c) = cis.iter_mut().find(|c| c.id == vm) {
            c.maintenance.push(MaintenanceWindow {
                start: ts(2030, 3, 14, 22),
                end: ts(2030, 3, 15, 2),
                change_id: Some(s("CHG0045121")),
                reason: Some(s("VM hardware upgrade and guest OS patching")),
                annotate: false,
            });
        }
        let acc = format!("sw-acc-{code}-{:0wa$}", 2.min(p.access_per_site));
        if let Some(c) = cis.iter_mut().find(|c| c.id == acc) {
            c.maintenance.push(MaintenanceWindow {
                start: ts(2024, 6, 1, 21),
                end: ts(2024, 6, 1, 23),
                change_id: Some(s("CHG0028764")),
                reason: Some(s("access switch firmware upgrade")),
                annotate: false,
            });
        }
    }
    CmdbFile { cis, redundancy_groups: groups }
}

/// Business service of a numbered (non-catalog) application.
fn extra_service_of(i: usize, services: usize) -> usize {
    let extra = services.saturating_sub(CATALOG_SERVICES.len());
    if extra > 0 {
        CATALOG_SERVICES.len() + (i - CATALOG_APPS.len()) % extra
    } else {
        i % services.max(1)
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use triaged::topology::Snapshot;

    #[test]
    fn example_is_deterministic_valid_and_counted() {
        let p = GenParams::example();
        let a = synthetic(&p);
        assert_eq!(a, synthetic(&p));
        assert_eq!(a.cis.len(), p.ci_count());
        let snap = Snapshot::from_file_model(a).expect("valid");
        assert!(snap.len() > 200, "{}", snap.len());
        let counts = snap.count_by_type();
        assert_eq!(counts["business_service"], 8);
        assert_eq!(counts["application"], 16);
        assert_eq!(counts["site"], 3);
        assert_eq!(counts["database"], 20);
    }

    #[test]
    fn scaled_estates_have_roughly_n_cis() {
        for n in [300usize, 1_000, 10_000, 50_000] {
            let p = GenParams::scaled(n);
            let got = p.ci_count();
            let err = (got as f64 - n as f64).abs() / n as f64;
            assert!(err < 0.1, "scaled({n}) -> {got} CIs ({p:?})");
        }
        let p = GenParams::scaled(1_000_000);
        let got = p.ci_count();
        assert!((950_000..1_050_000).contains(&got), "{got} {p:?}");
        // Generate and validate a mid-size one: unique names, IPs, resolvable relations.
        let p = GenParams::scaled(20_000);
        let file = synthetic(&p);
        assert_eq!(file.cis.len(), p.ci_count());
        let snap = Snapshot::from_file_model(file).expect("valid");
        let core = snap.by_id("sw-core-par1-01").unwrap();
        assert!(snap.impacted_services(core).len() >= 3);
        assert!(snap.lookup_ip("10.1.0.1").is_some());
    }

    #[test]
    fn ip_plan_falls_back_to_one_sequence() {
        let p = GenParams { sites: 300, access_per_site: 1, hypervisors_per_access: 1, vms_per_hypervisor: 1, ..GenParams::example() };
        let file = synthetic(&p);
        assert!(!IpPlan::new(&p).per_site);
        Snapshot::from_file_model(file).expect("unique addresses");
    }

    #[test]
    fn small_and_degenerate_parameters_stay_valid() {
        let cases = [
            GenParams { sites: 1, ..GenParams::example() },
            GenParams { sites: 0, ..GenParams::example() },
            GenParams { apps: 5, services: 3, ..GenParams::example() },
            GenParams { vms_per_hypervisor: 0, ..GenParams::example() },
            GenParams { apps: 40, services: 12, ..GenParams::example() },
            GenParams { apps: 40, services: 8, ..GenParams::example() },
        ];
        for p in cases {
            let file = synthetic(&p);
            assert_eq!(file.cis.len(), p.ci_count(), "{p:?}");
            if let Err(e) = Snapshot::from_file_model(file) {
                panic!("{p:?}: {e:?}");
            }
        }
    }
}
