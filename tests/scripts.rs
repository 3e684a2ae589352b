//! The release scripts: publish-layer.sh's dry run prints the exact AWS CLI commands.

use std::process::Command;

fn publish(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/publish-layer.sh"
        ))
        .args(args)
        .output()
        .expect("bash runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dry_run_prints_publish_and_permission_commands_per_region_and_arch() {
    let (code, out, err) = publish(&["--dry-run", "--public", "eu-west-1", "us-east-2"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let publishes: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("aws lambda publish-layer-version"))
        .collect();
    assert_eq!(publishes.len(), 4, "{out}");
    for (arch, region) in [
        ("x86_64", "eu-west-1"),
        ("x86_64", "us-east-2"),
        ("arm64", "eu-west-1"),
        ("arm64", "us-east-2"),
    ] {
        assert!(
            publishes
                .iter()
                .any(|l| l.contains(&format!("--region {region} "))
                    && l.contains(&format!("--layer-name loupe-{arch} "))
                    && l.contains(&format!("fileb://target/layer/loupe-layer-{arch}.zip"))
                    && l.contains(&format!("--compatible-architectures {arch} "))),
            "{arch} {region}: {out}"
        );
        assert!(
            lines.contains(
                &format!("arn:aws:lambda:{region}:<ACCOUNT>:layer:loupe-{arch}:<VERSION>").as_str()
            ),
            "{out}"
        );
    }
    let perms = lines
        .iter()
        .filter(|l| {
            l.starts_with("aws lambda add-layer-version-permission")
                && l.contains("--action lambda:GetLayerVersion")
                && l.contains("--principal \\*")
        })
        .count();
    assert_eq!(perms, 4, "{out}");
}

#[test]
fn private_by_default_and_one_arch_when_asked() {
    let (code, out, _) = publish(&["--dry-run", "--arch", "arm64", "ap-southeast-2"]);
    assert_eq!(code, 0);
    assert!(!out.contains("add-layer-version-permission"), "{out}");
    assert!(!out.contains("x86_64"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("aws ")).count(), 1);
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let (code, _, err) = publish(&["--dry-run", "not-a-region!"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a region name"), "{err}");
    let (code, _, err) = publish(&["--dry-run"]);
    assert_eq!(code, 2);
    assert!(err.contains("usage"), "{err}");
    let (code, _, err) = publish(&["--dry-run", "--arch", "sparc", "eu-west-1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--arch"), "{err}");
}
