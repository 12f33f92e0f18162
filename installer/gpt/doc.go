// Package gpt is offpeak's native A/B installer for GPT disks with a
// Flatcar/CoreOS layout: it reads and writes the GPT itself (both copies,
// CRCs, the CoreOS/ChromeOS gptprio attribute bits), streams an image into
// the passive USR-A/USR-B partition while hashing it, and flips the gptprio
// attributes the way cgpt does so the boot loader tries the new slot once.
package gpt
