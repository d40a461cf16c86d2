# scripts/lib/arch.sh: the Raspberry Pi architectures, sourced by
# scripts/cross.sh and scripts/deb.sh.
#   triple_of ARCH  -> the GNU triple of Debian's cross toolchain
#   qemu_of ARCH    -> the qemu-user binary that runs it
triple_of() {
    case "$1" in
        arm64) echo aarch64-linux-gnu ;;
        armhf) echo arm-linux-gnueabihf ;;
    esac
}
qemu_of() {
    case "$1" in
        arm64) echo qemu-aarch64 ;;
        armhf) echo qemu-arm ;;
    esac
}
