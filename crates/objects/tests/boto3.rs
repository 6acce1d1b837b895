//! boto3 and the aws CLI, unchanged, against the router: runs `boto3_compat.py` with
//! the Python named by WISP_BOTO3_PYTHON (else `python3`). Skipped, saying why, when
//! that Python cannot import boto3.

mod common;

use std::path::{Path, PathBuf};

use wisp_objects::{Config, EventKind};

fn aws_cli_next_to(python: &str) -> Option<PathBuf> {
    let beside = Path::new(python).parent().map(|d| d.join("aws"));
    if let Some(p) = beside.filter(|p| p.is_file()) {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("aws"))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_aws_cli_work_unchanged() {
    let python = std::env::var("WISP_BOTO3_PYTHON").unwrap_or_else(|_| "python3".into());
    let importable = std::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !importable {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and `{python} -c 'import boto3'` failed (.ci/run installs it)"
        );
        println!(
            "skipped: `{python} -c 'import boto3'` failed; set WISP_BOTO3_PYTHON to a Python with boto3 (and awscli)"
        );
        return;
    }
    let mut server = common::start(Config::default()).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/boto3_compat.py");
    let cli = aws_cli_next_to(&python);
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("WISP_S3_ENDPOINT", format!("http://{}", server.addr))
        .env("WISP_AWS_CLI", cli.as_deref().unwrap_or(Path::new("")))
        .env("AWS_ACCESS_KEY_ID", common::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", common::SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .env("HOME", home.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "boto3_compat.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if cli.is_none() {
        println!("note: aws CLI not found; only boto3 was checked");
    }
    // The uploads above produced events, multipart ones included.
    let mut multipart = 0;
    while let Ok(e) = server.events.try_recv() {
        if e.kind == EventKind::ObjectCreated(wisp_objects::CreatedKind::CompleteMultipartUpload) {
            multipart += 1;
        }
    }
    assert!(multipart >= 1);
}
