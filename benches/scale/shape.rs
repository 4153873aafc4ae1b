//! The clusters of the scale benchmark: who is in which group, which
//! endpoints are local, and the same cluster as a Marathon document, as
//! routed veths, as groupd's desired state and as the flat `nft` peer.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use groupd::compile::{LocalBinding, Policy};
use groupd::model::{ClusterView, Task};
use groupd::state::DesiredState;

use crate::common::netns::ScratchNs;

/// Tasks per Marathon app of the big group (groups are per app).
const BIG_APP_TASKS: usize = 1000;

#[derive(Clone)]
pub struct Shape {
    /// Groups of 10 members.
    pub small_groups: usize,
    /// Members of the one big group.
    pub big: usize,
    /// Local endpoints in the big group, and in small groups (one each).
    pub local_big: usize,
    pub local_small: usize,
}

impl Shape {
    /// B: one group of 100,000, 100 local members, 10 local endpoints in
    /// (10) small groups.
    pub fn b() -> Shape {
        Shape {
            small_groups: 10,
            big: 100_000,
            local_big: 100,
            local_small: 10,
        }
    }

    /// C at `groups` groups of 10 plus a big group of as many members,
    /// 1,000 local endpoints (100 in the big group).
    pub fn c(groups: usize) -> Shape {
        Shape {
            small_groups: groups,
            big: groups,
            local_big: 100,
            local_small: 900.min(groups),
        }
    }

    pub fn label(&self) -> String {
        format!("{}x10+{}", self.small_groups, self.big)
    }

    pub fn endpoints(&self) -> usize {
        self.big + 10 * self.small_groups
    }

    /// Endpoint `i`: the big group's members first, then the small groups'.
    pub fn addr(i: usize) -> Ipv6Addr {
        let n = i + 1;
        Ipv6Addr::new(
            0xfd00,
            0x233,
            0,
            0,
            0,
            0,
            (n >> 16) as u16,
            (n & 0xffff) as u16,
        )
    }

    /// The endpoints of this agent (indices), big-group ones first.
    fn locals(&self) -> Vec<usize> {
        let mut l: Vec<usize> = (0..self.local_big.min(self.big)).collect();
        l.extend((0..self.local_small).map(|k| self.big + 10 * k));
        l
    }

    /// veth-s<n> (peer vp-s<n>) with a /128 route to each local endpoint.
    pub fn task_interfaces(&self, ns: &ScratchNs, dir: &Path) {
        let mut batch = String::new();
        for (n, i) in self.locals().into_iter().enumerate() {
            let _ = writeln!(batch, "link add veth-s{n} type veth peer name vp-s{n}");
            let _ = writeln!(batch, "link set veth-s{n} up");
            let _ = writeln!(batch, "link set vp-s{n} up");
            let _ = writeln!(batch, "route add {}/128 dev veth-s{n}", Self::addr(i));
        }
        let path = dir.join("links.batch");
        std::fs::write(&path, batch).expect("write ip batch");
        ns.ip(&["-batch", path.to_str().expect("utf-8 path")]);
    }

    /// The apps: (id, group, first endpoint, tasks).
    fn apps(&self) -> impl Iterator<Item = (String, String, usize, usize)> + '_ {
        let big = (0..self.big.div_ceil(BIG_APP_TASKS)).map(move |a| {
            let first = a * BIG_APP_TASKS;
            let n = BIG_APP_TASKS.min(self.big - first);
            (format!("big{a}"), "big".to_string(), first, n)
        });
        let small = (0..self.small_groups)
            .map(move |k| (format!("s{k}"), format!("g{k}"), self.big + 10 * k, 10));
        big.chain(small)
    }

    /// `/v2/apps?embed=apps.tasks`, streamed to `path`.
    pub fn write_marathon_doc(&self, path: &Path) {
        let f = std::fs::File::create(path).expect("create the document");
        let mut w = std::io::BufWriter::new(f);
        let mut first_app = true;
        w.write_all(b"{\"apps\":[").expect("write");
        for (id, group, first, n) in self.apps() {
            let mut s = String::with_capacity(200 * n);
            let _ = write!(
                s,
                "{}{{\"id\":\"/{id}\",\"version\":\"v1\",\"ipAddress\":{{\"groups\":[\"{group}\"]}},\"tasks\":[",
                if first_app { "" } else { "," }
            );
            first_app = false;
            for j in 0..n {
                let _ = write!(
                    s,
                    "{}{{\"id\":\"{id}.t{j}\",\"appId\":\"/{id}\",\"version\":\"v1\",\"state\":\"TASK_RUNNING\",\"ipAddresses\":[{{\"ipAddress\":\"{}\",\"protocol\":\"IPv6\"}}]}}",
                    if j == 0 { "" } else { "," },
                    Self::addr(first + j)
                );
            }
            s.push_str("]}");
            w.write_all(s.as_bytes()).expect("write");
        }
        w.write_all(b"]}\n").expect("write");
        w.flush().expect("flush the document");
    }

    /// The peer: one flat `ifname . ipv6_addr` set, one element per endpoint.
    pub fn nft_flat(&self) -> String {
        let n = self.endpoints();
        let mut s = String::with_capacity(n * 40);
        s.push_str("table inet gd_peer {\n  set flat { type ifname . ipv6_addr; elements = { ");
        for i in 0..n {
            let _ = write!(
                s,
                "{}\"veth-p\" . {}",
                if i == 0 { "" } else { ", " },
                Self::addr(i)
            );
        }
        s.push_str(" } }\n}\n");
        s
    }

    fn task(id: &str, app: &str, i: usize, group: &str) -> Task {
        Task::running(id, app, [IpAddr::V6(Self::addr(i))], &[group])
    }

    /// groupd's desired state for the cluster (default policy, wide groups on).
    pub fn desired_state(&self) -> DesiredState {
        let config = groupd::config::Config::parse("[source]\nkind = \"file\"\npath = \"/x\"\n")
            .expect("config");
        let mut st = DesiredState::new(Policy::from_config(&config));
        let mut view = ClusterView::default();
        for (id, group, first, n) in self.apps() {
            for j in 0..n {
                view.insert(Self::task(
                    &format!("{id}.t{j}"),
                    &format!("/{id}"),
                    first + j,
                    &group,
                ));
            }
        }
        st.set_view(view);
        let mut bindings = HashMap::new();
        for (n, i) in self.locals().into_iter().enumerate() {
            let ip = IpAddr::V6(Self::addr(i));
            bindings.insert(
                ip,
                LocalBinding {
                    iface: format!("veth-s{n}"),
                    ip,
                    bridge: None,
                },
            );
        }
        st.set_bindings(bindings, BTreeSet::new(), BTreeSet::new());
        st
    }

    /// A task that is not in the cluster yet, in the big group.
    pub fn extra_big_member(&self, i: usize) -> Task {
        Self::task(
            &format!("extra.t{i}"),
            "/extra",
            self.endpoints() + i,
            "big",
        )
    }
}

/// The curve's table (benches/results/scale.csv) and its drawing
/// (benches/results/scale.png, by benches/scale/plot.py with matplotlib).
pub fn write_curve(csv: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results = root.join("benches/results");
    let csv_path = results.join("scale.csv");
    std::fs::write(&csv_path, csv).expect("write scale.csv");
    let png = results.join("scale.png");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(root.join("benches/scale/plot.py"))
        .arg(&csv_path)
        .arg(&png)
        .output();
    match out {
        Ok(o) if o.status.success() => println!("curve: {}", png.display()),
        Ok(o) => eprintln!(
            "curve: not drawn ({}); install python3-matplotlib (make bench-deps)",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("curve: not drawn: {e}"),
    }
}
