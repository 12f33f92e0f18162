package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/installer/gpt"
)

// installFlags are shared by `offpeak install` and its subcommands.
type installFlags struct {
	disk, booted, output string
}

func (f *installFlags) target(a *App) gpt.Target {
	return gpt.Target{Disk: f.disk, Booted: f.booted, CmdlinePath: a.Layout().Join(gpt.DefaultCmdline), RecordDir: a.Layout().InstallRecordDir()}
}

func (f *installFlags) check() error {
	if f.disk == "" {
		return errors.New("--disk is required")
	}
	return CheckOutput(f.output, "text", "json")
}

// newInstallCmd is the native GPT A/B installer: `offpeak install` writes
// an image into the passive USR partition; status, mark-good and rollback
// work on the same disk.
func newInstallCmd(a *App) *cobra.Command {
	var (
		f                       installFlags
		image, sum, sig, pubkey string
		force                   bool
	)
	cmd := &cobra.Command{
		Use:   "install --disk DEV --image FILE [--sha256 HEX] [--sig FILE --pubkey FILE]",
		Short: "Write an OS image into the passive USR-A/USR-B partition and make it boot next, once",
		Long: `Streams the image (a file, or - for standard input) into the partition that
is not booted, hashing it on the way, verifies the SHA-256 and/or the ed25519
signature, and only then sets the gptprio attributes as cgpt would: the
passive slot gets priority booted+1, tries 1, successful 0. Nothing reboots.

Before the first byte is written the passive slot is marked unbootable
(priority 0, tries 0, successful 0); a failed or interrupted install leaves
it so, and only a verified install makes it bootable again. The outcome is
kept below the state directory for 'install status' and 'offpeak status'.

The signature covers the image's SHA-256 as 64 lower-case hex characters
(no newline); the public key is raw 32 bytes, base64, or PEM.

The booted slot is --booted (label or PARTUUID) or else mount.usr=/
verity.usr=/usr= PARTUUID=… or PARTLABEL=… on /proc/cmdline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if image == "" {
				return errors.New("--image is required (a file, or - for standard input)")
			}
			if (sig == "") != (pubkey == "") {
				return errors.New("--sig and --pubkey go together")
			}
			o := gpt.Options{Target: f.target(a), SHA256: sum, Force: force, Logger: a.Logger}
			if image == "-" {
				o.Image = cmd.InOrStdin()
			} else {
				o.ImagePath = image
			}
			if sig != "" {
				var err error
				if o.Signature, err = gpt.ReadSignature(sig); err != nil {
					return err
				}
				if o.PublicKey, err = gpt.ReadPublicKey(pubkey); err != nil {
					return err
				}
			}
			res, err := gpt.Install(cmd.Context(), o)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return WriteJSON(a.Stdout, res)
			}
			fmt.Fprintf(a.Stdout, "installed %d bytes into %s (partition %d, PARTUUID %s) on %s\n",
				res.Bytes, res.Passive.Label, res.Passive.Index, res.Passive.PARTUUID, res.Disk)
			fmt.Fprintf(a.Stdout, "sha256 %s (verified: %s)\n", res.SHA256, res.Verified)
			printState(a.Stdout, res.State)
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&f.disk, "disk", "", "block device or disk image holding USR-A and USR-B")
	cmd.PersistentFlags().StringVar(&f.booted, "booted", "", "booted slot: label (USR-A, USR-B) or PARTUUID; default from /proc/cmdline")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", "text", "text or json")
	cmd.Flags().StringVar(&image, "image", "", "image file to install, - for standard input")
	cmd.Flags().StringVar(&sum, "sha256", "", "expected SHA-256 of the image (hex)")
	cmd.Flags().StringVar(&sig, "sig", "", "ed25519 signature file over the image's hex SHA-256 (raw 64 bytes or base64)")
	cmd.Flags().StringVar(&pubkey, "pubkey", "", "ed25519 public key file (raw 32 bytes, base64 or PEM)")
	cmd.Flags().BoolVar(&force, "force", false, "install even though the booted slot was never marked good")

	cmd.AddCommand(
		newInstallStateCmd(a, &f, "status", "Show the A/B slots and whether an update is staged", gpt.Inspect),
		newInstallStateCmd(a, &f, "mark-good", "Mark the booted slot good (successful=1, tries=0)", gpt.MarkGood),
		newInstallStateCmd(a, &f, "rollback", "Make the other slot boot next, if it is verified and marked good", gpt.Rollback),
		newInstallRepairCmd(a, &f),
	)
	return cmd
}

func newInstallRepairCmd(a *App, f *installFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "repair --disk DEV",
		Short: "Rewrite a damaged or stale GPT copy (primary or backup) from the good one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			fixed, err := gpt.Repair(cmd.Context(), f.disk)
			if err != nil {
				return err
			}
			if f.output == "json" {
				return WriteJSON(a.Stdout, map[string]any{"disk": f.disk, "repaired": fixed != nil, "problems": fixed})
			}
			if fixed == nil {
				fmt.Fprintf(a.Stdout, "%s: both GPT copies are valid; nothing to repair\n", f.disk)
				return nil
			}
			for _, p := range fixed {
				fmt.Fprintf(a.Stdout, "repaired: %s\n", p)
			}
			return nil
		},
	}
}

type stateOp = func(context.Context, gpt.Target) (gpt.State, error)

func newInstallStateCmd(a *App, f *installFlags, use, short string, op stateOp) *cobra.Command {
	return &cobra.Command{
		Use:   use + " --disk DEV",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			st, err := op(cmd.Context(), f.target(a))
			if err != nil {
				return err
			}
			if f.output == "json" {
				return WriteJSON(a.Stdout, st)
			}
			printState(a.Stdout, st)
			return nil
		},
	}
}

func printState(w io.Writer, st gpt.State) {
	fmt.Fprintf(w, "disk:     %s\n", st.Disk)
	fmt.Fprintf(w, "booted:   %s  %s\n", st.Booted, st.Booted.PARTUUID)
	fmt.Fprintf(w, "passive:  %s  %s\n", st.Passive, st.Passive.PARTUUID)
	fmt.Fprintf(w, "          %s\n", st.PassiveStatus)
	staged := "no"
	if st.Staged {
		staged = "yes (" + st.Passive.Label + " is tried on the next boot)"
	}
	fmt.Fprintf(w, "staged:   %s\n", staged)
	next := st.Next
	if next == "" {
		next = "nothing bootable"
	}
	fmt.Fprintf(w, "next boot: %s\n", next)
	for _, p := range st.Problems {
		fmt.Fprintf(w, "problem:  %s\n", p)
	}
}
