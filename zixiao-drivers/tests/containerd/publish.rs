//! Published ports end to end: a busybox container on a network publishes
//! `8080:80`, and a real TCP connection from outside the node (a namespace
//! linked to it, see `zixiao_testing::underlay`) to the node's address on
//! port 8080 reads the container's answer. Conflicts are refused naming
//! the holder, and stop and delete take the node's rules away. Everything
//! runs inside a network namespace the test creates (see `network`).

use std::net::{SocketAddr, TcpListener};

use zixiao_core::model::{CreateNetwork, PublishedPort};
use zixiao_core::{ErrorKind, InstanceStatus};
use zixiao_net::ports::PortsTable;
use zixiao_net::{nft, LinuxNetwork};
use zixiao_testing::underlay::{Underlay, NODE_ADDRESS};
use zixiao_testing::wait::wait_until;

use super::network::{controller, isolated, on_network, until_status};
use super::{fixture, TIMEOUT};

fn ports(texts: &[&str]) -> Vec<PublishedPort> {
    texts
        .iter()
        .map(|t| PublishedPort::try_from(*t).expect(t))
        .collect()
}

#[test]
fn a_published_port_reaches_the_container_from_outside_and_conflicts_change_nothing() {
    isolated(|netns_dir| async move {
        let Some(fx) = fixture("publish").await else {
            return;
        };
        let host = LinuxNetwork::connect(&netns_dir).expect("netlink");
        let underlay = Underlay::new(&netns_dir.join("outside"), "upl0");
        let c = controller(fx.dir.path(), fx.driver.options().clone(), host.clone()).await;
        c.create_network(CreateNetwork::new("web", ["10.75.0.0/24"]))
            .await
            .expect("create network");

        // A listener answering every connection on its port 80.
        let mut request = on_network("web", "web", "nc -ll -p 80 -e echo hello-from-web");
        request.spec.publish = ports(&["8080:80"]);
        c.create_instance(request).await.expect("create web");
        let web = until_status(&c, "web", InstanceStatus::Running).await;
        let published = SocketAddr::from((NODE_ADDRESS, 8080));
        let underlay = &underlay;
        let answer = wait_until("the published port to answer", TIMEOUT, || async move {
            underlay
                .fetch(published)
                .filter(|a| a.contains("hello-from-web"))
        })
        .await;
        assert_eq!(answer.trim(), "hello-from-web");
        let table = PortsTable::new(&c.installation().await.unwrap(), &web.id)
            .unwrap()
            .to_string();
        let rules = nft::show_table(&table).await.unwrap().expect("the table");
        let to = format!("dnat ip to {}:80", web.attachments[0].addresses[0].address);
        assert!(rules.contains(&to), "{rules}");

        // Another instance asking for the same host port is refused,
        // naming the holder, and nothing is stored or changed.
        let tables_before = nft::our_tables().await.unwrap();
        let mut clash = on_network("clash", "web", "sleep 600");
        clash.spec.publish = ports(&["8080:8080"]);
        let err = c.create_instance(clash).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
        assert!(
            err.to_string()
                .contains("host port 8080/tcp is published by instance `web`"),
            "{err}"
        );
        assert!(c.get_instance("clash").await.is_err(), "nothing stored");
        assert_eq!(nft::our_tables().await.unwrap(), tables_before);

        // A port a process of the node holds: the controller cannot know,
        // the node refuses at create, naming the process; nothing of the
        // instance is left on the node.
        let held = TcpListener::bind("0.0.0.0:9090").unwrap();
        let mut bound = on_network("bound", "web", "sleep 600");
        bound.spec.publish = ports(&["9090:80"]);
        c.create_instance(bound).await.expect("stored");
        let bound = until_status(&c, "bound", InstanceStatus::Failed).await;
        let problem = bound.problem().unwrap_or_default().to_owned();
        assert!(
            problem.contains("host port 9090/tcp is taken on this node")
                && problem.contains(&format!("process {} (`", std::process::id())),
            "{problem}"
        );
        assert_eq!(nft::our_tables().await.unwrap(), tables_before);
        c.delete_instance("bound").await.expect("delete bound");
        assert!(c.converge("bound").await.expect("converge").is_none());
        drop(held);

        // A stop takes the rules away, a start puts them back.
        c.stop_instance("web").await.expect("stop");
        until_status(&c, "web", InstanceStatus::Stopped).await;
        assert_eq!(nft::show_table(&table).await.unwrap(), None);
        assert_eq!(underlay.fetch(published), None);
        c.start_instance("web").await.expect("start");
        until_status(&c, "web", InstanceStatus::Running).await;
        wait_until(
            "the published port to answer again",
            TIMEOUT,
            || async move {
                underlay
                    .fetch(published)
                    .filter(|a| a.contains("hello-from-web"))
            },
        )
        .await;

        // A delete leaves no rule, container, namespace or veth.
        c.delete_instance("web").await.expect("delete");
        assert!(c.converge("web").await.expect("converge delete").is_none());
        assert_eq!(nft::show_table(&table).await.unwrap(), None);
        assert!(
            fx.leftovers().await.is_empty(),
            "{:?}",
            fx.leftovers().await
        );
        assert!(host.links_with_prefix("zxv").await.unwrap().is_empty());
        c.delete_network("web").await.expect("delete network");
        assert!(nft::our_tables().await.unwrap().is_empty());
    });
}
