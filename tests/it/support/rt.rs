//! A Request Tracker 5 of a test's own (Debian's `request-tracker5`,
//! `rt5-db-sqlite`, `rt5-standalone`): its own SQLite database and site
//! config in a temp dir, listening on 127.0.0.1 on a free port, killed on
//! drop.
//!
//! The database is initialised once per test binary (`rt-setup-database`
//! with the RT core data, then `RT_INITIALDATA`: the `TriagedKey` ticket
//! custom field on the General queue and an auth token for `root`, whose
//! password is [`ROOT_PASSWORD`]) and copied for each instance, so an
//! instance costs only the server's start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const SETUP_DATABASE: &str = "/usr/sbin/rt-setup-database";
const SERVER: &str = "/usr/share/request-tracker5/libexec/rt-server";
/// Why a test needs these programs, and where they come from.
const MISSING: &str = "Request Tracker is not installed: install the Debian packages request-tracker5, rt5-db-sqlite and rt5-standalone (scripts/install-test-deps does)";
/// The password of RT's `root` user (a superuser) in every test RT.
pub const ROOT_PASSWORD: &str = "triaged-test-root";
/// Bound of RT's start, including the first compile of its templates.
const READY_WITHIN: Duration = Duration::from_secs(120);

/// Data for `rt-setup-database --action insert`: the key custom field,
/// applied to General, and an auth token for root, written to the file
/// `TRIAGED_RT_TOKEN_FILE` names.
const RT_INITIALDATA: &str = r#"
@CustomFields = (
    {
        Name        => 'TriagedKey',
        Type        => 'FreeformSingle',
        LookupType  => 'RT::Queue-RT::Ticket',
        Queue       => ['General'],
        Description => 'triaged incident key',
    },
);
@Final = (
    sub {
        my $root = RT::User->new(RT->SystemUser);
        $root->Load('root');
        my $token = RT::AuthToken->new(RT::CurrentUser->new($root));
        my ($ok, $msg, $auth) = $token->Create(Owner => $root->Id, Description => 'triaged tests');
        die "cannot create the auth token: $msg" unless $ok;
        open(my $fh, '>', $ENV{TRIAGED_RT_TOKEN_FILE}) or die "cannot write the token file: $!";
        print $fh $auth;
        close $fh;
    },
);
"#;

/// The site config of an RT whose database is `db` and URL port `port`.
fn site_config(db: &Path, port: u16) -> String {
    format!(
        "Set($rtname, 'triaged-test');\n\
         Set($Organization, 'triaged-test');\n\
         Set($WebDomain, '127.0.0.1');\n\
         Set($WebPort, {port});\n\
         Set($WebPath, '');\n\
         Set($WebBaseURL, 'http://127.0.0.1:{port}');\n\
         Set($DatabaseType, 'SQLite');\n\
         Set($DatabaseName, '{}');\n\
         Set($LogToSTDERR, 'error');\n\
         Set($LogToSyslog, undef);\n\
         Set($LogToFile, undef);\n\
         1;\n",
        db.display()
    )
}

/// The initialised database every instance copies, and root's token.
struct Template {
    db: PathBuf,
    token: String,
}

/// Runs an RT program with `dir`'s site config; panics with its output.
fn run_rt(dir: &Path, program: &str, args: &[&str], envs: &[(&str, &Path)]) {
    let mut cmd = Command::new(program);
    cmd.args(args).env("RT_SITE_CONFIG", dir.join("RT_SiteConfig.pm")).env("RT_SITE_CONFIG_DIR", dir.join("RT_SiteConfig.d"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the site config of `db` at `port` into `dir` (and an empty
/// `RT_SiteConfig.d`, so the system's config snippets are not read).
fn configure(dir: &Path, db: &Path, port: u16) {
    std::fs::create_dir_all(dir.join("RT_SiteConfig.d")).unwrap();
    std::fs::write(dir.join("RT_SiteConfig.pm"), site_config(db, port)).unwrap();
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        for program in [SETUP_DATABASE, SERVER] {
            assert!(Path::new(program).exists(), "{program} is missing. {MISSING}");
        }
        let started = Instant::now();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale_templates(root);
        let dir = root.join(format!("rt-template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("rt.db");
        configure(&dir, &db, 80);
        let password = dir.join("root-password");
        std::fs::write(&password, ROOT_PASSWORD).unwrap();
        let pw = password.to_str().unwrap();
        run_rt(&dir, SETUP_DATABASE, &["--action", "init", "--root-password-file", pw], &[]);
        let data = dir.join("initialdata");
        std::fs::write(&data, RT_INITIALDATA).unwrap();
        let token_file = dir.join("token");
        run_rt(
            &dir,
            SETUP_DATABASE,
            &["--action", "insert", "--datafile", data.to_str().unwrap()],
            &[("TRIAGED_RT_TOKEN_FILE", &token_file)],
        );
        let token = std::fs::read_to_string(&token_file).expect("the initialdata wrote root's token").trim().to_owned();
        println!("rt: database template initialised in {:.1?}", started.elapsed());
        Template { db, token }
    })
}

/// Templates of earlier test runs whose process is gone.
fn remove_stale_templates(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("rt-template-")) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A running RT; killed (its whole process group) on drop.
pub struct Rt {
    /// `http://127.0.0.1:<port>`, the sink's endpoint.
    pub url: String,
    /// An auth token of `root` (`Authorization: token <token>`).
    pub token: String,
    child: Child,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Rt {
    /// Starts an RT on a copy of the template database and waits (bounded)
    /// until REST2 answers with the token.
    pub async fn start() -> Rt {
        let template = template();
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rt.db");
        std::fs::copy(&template.db, &db).unwrap();
        let port = free_port();
        configure(dir.path(), &db, port);
        let log = std::fs::File::create(dir.path().join("rt-server.log")).unwrap();
        let mut cmd = Command::new(SERVER);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--max-workers", "2"])
            .env("RT_SITE_CONFIG", dir.path().join("RT_SiteConfig.pm"))
            .env("RT_SITE_CONFIG_DIR", dir.path().join("RT_SiteConfig.d"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Its own process group: the server forks workers, and drop kills them all.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{SERVER}: {e}. {MISSING}"));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut rt = Rt { url: format!("http://127.0.0.1:{port}"), token: template.token.clone(), child, client, _dir: dir };
        rt.wait_ready().await;
        println!("rt: server on port {port} ready in {:.1?}", started.elapsed());
        rt
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("rt-server exited ({status}) before it was ready:\n{}", self.log());
            }
            let probe = self.client.get(format!("{}/REST/2.0/rt", self.url)).header("Authorization", self.auth()).send().await;
            match probe {
                Ok(r) if r.status().is_success() => return,
                Ok(r) if r.status().is_client_error() => panic!("RT refused the test token: HTTP {}\n{}", r.status(), self.log()),
                _ => {}
            }
            assert!(Instant::now() < deadline, "RT not ready within {READY_WITHIN:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("rt-server.log")).unwrap_or_default()
    }

    fn auth(&self) -> String {
        format!("token {}", self.token)
    }

    /// `GET /REST/2.0/{path}` with `query`, as root; the JSON answer.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = self
            .client
            .get(format!("{}/REST/2.0/{path}", self.url))
            .query(query)
            .header("Authorization", self.auth())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: HTTP {}", r.status());
        r.json().await.unwrap()
    }

    /// `PUT /REST/2.0/{path}` with `body`, as root; RT's messages.
    pub async fn put(&self, path: &str, body: Value) -> Value {
        let r =
            self.client.put(format!("{}/REST/2.0/{path}", self.url)).json(&body).header("Authorization", self.auth()).send().await.unwrap();
        assert!(r.status().is_success(), "PUT {path}: HTTP {}", r.status());
        r.json().await.unwrap()
    }

    /// The tickets whose `TriagedKey` is `key`: id, Status, Priority,
    /// Owner and Queue names, oldest first.
    pub async fn tickets(&self, key: &str) -> Vec<Value> {
        let query = format!("CF.{{TriagedKey}} = '{key}'");
        let fields = [
            ("query", query.as_str()),
            ("orderby", "id"),
            ("order", "ASC"),
            ("fields", "Status,Priority,Owner,Queue,Subject"),
            ("fields[Owner]", "Name"),
            ("fields[Queue]", "Name"),
        ];
        self.get("tickets", &fields).await["items"].as_array().unwrap().clone()
    }

    /// The one ticket of `key` (fails the test on none or several).
    pub async fn ticket(&self, key: &str) -> Value {
        let tickets = self.tickets(key).await;
        assert_eq!(tickets.len(), 1, "one ticket for {key}: {tickets:#?}");
        tickets[0].clone()
    }

    /// Every ticket, oldest first: its id, the value of its `TriagedKey`
    /// and its status.
    pub async fn all_tickets(&self) -> Vec<(String, String, String)> {
        let found = self.get("tickets", &[("query", "id > 0"), ("orderby", "id"), ("order", "ASC"), ("per_page", "100")]).await;
        let mut out = Vec::new();
        for item in found["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_owned();
            let t = self.get(&format!("ticket/{id}"), &[]).await;
            let key = t["CustomFields"]
                .as_array()
                .and_then(|cfs| cfs.iter().find(|cf| cf["name"] == "TriagedKey"))
                .and_then(|cf| cf["values"][0].as_str())
                .unwrap_or_default()
                .to_owned();
            out.push((id, key, t["Status"].as_str().unwrap_or_default().to_owned()));
        }
        out
    }

    /// The statuses ticket `id` went through, from its first.
    pub async fn statuses(&self, id: &str) -> Vec<String> {
        let history = self.get(&format!("ticket/{id}/history"), &[("fields", "Type,OldValue,NewValue"), ("per_page", "100")]).await;
        let changes: Vec<&Value> = history["items"].as_array().unwrap().iter().filter(|t| t["Type"] == "Status").collect();
        let first = changes.first().and_then(|t| t["OldValue"].as_str()).unwrap_or("new");
        std::iter::once(first).chain(changes.iter().filter_map(|t| t["NewValue"].as_str())).map(str::to_owned).collect()
    }

    /// The texts of ticket `id`'s comments, oldest first.
    pub async fn comments(&self, id: &str) -> Vec<String> {
        let history = self.get(&format!("ticket/{id}/history"), &[("fields", "Type"), ("per_page", "100")]).await;
        let comment_ids: Vec<&str> =
            history["items"].as_array().unwrap().iter().filter(|t| t["Type"] == "Comment").filter_map(|t| t["id"].as_str()).collect();
        let attachments =
            self.get(&format!("ticket/{id}/attachments"), &[("fields", "Content,ContentType,TransactionId"), ("per_page", "100")]).await;
        attachments["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["TransactionId"].as_str().is_some_and(|t| comment_ids.contains(&t)))
            .filter_map(|a| a["Content"].as_str().map(str::to_owned))
            .collect()
    }
}

/// A port nothing listens on now, on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Drop for Rt {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}
