//! A container's output kept within its size limit: the oldest part is
//! discarded on disk while the container writes on, and a reader that
//! follows the log keeps its place.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use zixiao_core::driver::Images;
use zixiao_core::{Driver, RuntimeState};
use zixiao_drivers::LogLimit;
use zixiao_testing::wait::wait_until;

use super::{busybox, fixture_with, instance};

const MAX_BYTES: u64 = 128 * 1024;

#[tokio::test]
async fn a_containers_output_is_kept_within_its_limit_and_followed_across_the_trim() {
    let Some(fx) = fixture_with("log-limit", |mut options| {
        options.log_limit = LogLimit {
            max_bytes: MAX_BYTES,
            check_every: Duration::from_millis(200),
        };
        options
    })
    .await
    else {
        return;
    };
    fx.driver
        .import(&fx.busybox, None, &|_| {})
        .await
        .expect("import busybox");
    // About 1 MiB of numbered lines, then a last line, then it stays.
    let script = "i=0; while [ $i -lt 40000 ]; do echo \"line $i of a chatty container\"; \
                  i=$((i+1)); done; echo finished; sleep 600";
    let i = instance("chatty", busybox(&["sh", "-c", script]));
    fx.driver.create(&i).await.expect("create");
    fx.driver.start(&i).await.expect("start");
    fx.wait_state(&i, "running", |s| matches!(s, RuntimeState::Running))
        .await;
    let path = fx.driver.log_path(&i);
    let written = wait_until("the last line", Duration::from_secs(120), || async {
        let log = std::fs::read(&path).unwrap_or_default();
        log.ends_with(b"finished\n").then_some(log.len() as u64)
    })
    .await;
    assert!(written > 8 * MAX_BYTES, "{written} bytes written");
    // Within the limit on disk at the next look; the file keeps its length.
    let on_disk = wait_until("the log trimmed", Duration::from_secs(30), || async {
        let meta = std::fs::metadata(&path).expect("stat the log");
        (meta.blocks() * 512 <= MAX_BYTES).then_some(meta.blocks() * 512)
    })
    .await;
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), written);
    eprintln!("{written} bytes written, {on_disk} kept on disk");

    // The reader at offset 0 learns what was discarded, then reads on from
    // the oldest line kept to the last one, with no gap.
    let first = fx
        .driver
        .read_log(&i, 0, 1 << 20)
        .await
        .expect("read from the start");
    let text = String::from_utf8(first.data).expect("text");
    let (notice, kept) = text.split_once('\n').expect("a first line");
    assert!(
        notice.starts_with("[zixiao: ") && notice.contains("bytes of older log discarded"),
        "{notice}"
    );
    assert_eq!(first.next_offset, written, "one read reaches the end");
    assert!(kept.ends_with("line 39999 of a chatty container\nfinished\n"));
    let numbers: Vec<u32> = kept
        .lines()
        .skip(1) // the first kept line may begin mid-line
        .filter_map(|l| l.strip_prefix("line ")?.split(' ').next()?.parse().ok())
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "the kept lines follow one another"
    );
    assert!(
        numbers.first().is_some_and(|&n| n > 1000),
        "the oldest lines are gone"
    );
    // A reader already at the end sees nothing more, and no notice.
    let end = fx
        .driver
        .read_log(&i, written, 100)
        .await
        .expect("read at the end");
    assert!(end.data.is_empty() && end.next_offset == written);

    fx.driver.delete(&i).await.expect("delete");
    fx.finish().await;
}
