//! The deploy manifests' table of what the sidecar reads and writes (which
//! its RBAC rules and CRDs are held to) is the table the sidecar watches:
//! a kind added to one and not the other would be forbidden at run time.

use switchyard_kube::kinds::WATCHED;

#[test]
fn every_watched_kind_is_granted_as_the_deploy_manifests_say() {
    for kind in WATCHED {
        let granted = switchyard_deploy::watched(kind.kind)
            .unwrap_or_else(|| panic!("deploy/ grants nothing on {}", kind.kind));
        assert_eq!(granted.group, kind.group, "{}", kind.kind);
        assert_eq!(granted.versions, kind.versions, "{}", kind.kind);
        assert_eq!(granted.namespaced, kind.namespaced, "{}", kind.kind);
        assert_eq!(
            granted.writes_status, kind.status_written,
            "{}: status written",
            kind.kind
        );
    }
    assert_eq!(switchyard_deploy::WATCHED.len(), WATCHED.len());
}
