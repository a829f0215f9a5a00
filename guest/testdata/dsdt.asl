/*
 * The DSDT guest.dsdt() builds for testACPI() (guest/acpi_test.go),
 * written by hand in ASL. dsdt.aml is ACPICA's compilation of it:
 *     iasl -on -p dsdt dsdt.asl   (iasl 20200925, Debian acpica-tools;
 *     -on keeps the root prefixes of \_SB and \_S5 as our encoder writes them)
 * and TestDSDTMatchesIASL compares our encoder's bytes with it.
 */
DefinitionBlock ("dsdt.aml", "DSDT", 2, "HYPERD", "HYPERDGO", 1)
{
    Scope (\_SB)
    {
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, Zero)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08)
                IRQNoFlags () {4}
            })
        }
        Device (VR00)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, Zero)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0000000, 0x00000200)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {5}
            })
        }
        Device (VR01)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, One)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0001000, 0x00000200)
                Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) {6}
            })
        }
        Device (VR02)
        {
            Name (_HID, "LNRO0005")
            Name (_UID, 0x02)
            Name (_CCA, One)
            Name (_CRS, ResourceTemplate ()
            {
                Memory32Fixed (ReadWrite, 0xD0002000, 0x00000200)
                Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {23}
            })
        }
    }
    Name (\_S5, Package (0x04) {0x05, 0x05, Zero, Zero})
}
