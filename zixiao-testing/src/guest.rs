//! What the test guests' `/init` (scripts/images/vm-init.sh) prints on
//! their serial console, read back by the driver tests.

/// The cloud-init seed the guest found (booted with `zixiao.cidata`): the
/// text between its `ZIXIAO-CIDATA-BEGIN` and `ZIXIAO-CIDATA-END` lines,
/// starting with ` /dev/vdX label=VOLUME-ID` and then each file after a
/// `== NAME` line. Panics with the whole console when there is none.
pub fn cidata_seed(console: &str) -> &str {
    console
        .split("ZIXIAO-CIDATA-BEGIN")
        .nth(1)
        .and_then(|rest| rest.split("ZIXIAO-CIDATA-END").next())
        .unwrap_or_else(|| panic!("no cloud-init seed seen by the guest:\n{console}"))
}

/// Whether the seed's volume label (see [`cidata_seed`]) is `cidata`, the
/// one cloud-init's NoCloud data source looks for (either case).
pub fn labelled_cidata(seed: &str) -> bool {
    seed.split("label=")
        .nth(1)
        .is_some_and(|label| label.to_lowercase().starts_with("cidata "))
}
