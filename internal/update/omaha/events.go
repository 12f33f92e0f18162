package omaha

import (
	"fmt"
	"strconv"
)

// EventType is an Omaha event type; only those update_engine sends are
// named.
type EventType int

// The event types update_engine sends.
const (
	EventTypeUpdateComplete       EventType = 3
	EventTypeUpdateDownloadStart  EventType = 13
	EventTypeUpdateDownloadFinish EventType = 14
)

// EventResult is an Omaha event result.
type EventResult int

// The results update_engine sends.
const (
	EventResultError         EventResult = 0
	EventResultSuccess       EventResult = 1
	EventResultSuccessReboot EventResult = 2
)

// MarshalText and UnmarshalText make the XML attributes plain numbers.
func (t EventType) MarshalText() ([]byte, error) { return []byte(strconv.Itoa(int(t))), nil }

func (t *EventType) UnmarshalText(b []byte) error {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("eventtype %q: not a number", b)
	}
	*t = EventType(n)
	return nil
}

func (r EventResult) MarshalText() ([]byte, error) { return []byte(strconv.Itoa(int(r))), nil }

func (r *EventResult) UnmarshalText(b []byte) error {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("eventresult %q: not a number", b)
	}
	*r = EventResult(n)
	return nil
}

// ErrorCode is update_engine's ActionExitCode, sent with a failure event.
// Nebraska stores it as the event's error code; keeping update_engine's
// numbers lets an operator read offpeak's failures like Flatcar's.
type ErrorCode int

// The codes offpeak reports (a subset of update_engine's).
const (
	CodeError                          ErrorCode = 1
	CodeOmahaRequestError              ErrorCode = 2
	CodeOmahaResponseHandlerError      ErrorCode = 3
	CodePostinstallRunnerError         ErrorCode = 5
	CodeInstallDeviceOpenError         ErrorCode = 7
	CodeDownloadTransferError          ErrorCode = 9
	CodePayloadHashMismatchError       ErrorCode = 10
	CodePayloadSizeMismatchError       ErrorCode = 11
	CodeDownloadPayloadVerification    ErrorCode = 12
	CodeDownloadNewPartitionInfoError  ErrorCode = 13
	CodeDownloadWriteError             ErrorCode = 14
	CodeNewRootfsVerificationError     ErrorCode = 15
	CodeSignedDeltaPayloadExpected     ErrorCode = 17
	CodePayloadPubKeyVerificationError ErrorCode = 18
	CodeDownloadInvalidMetadataMagic   ErrorCode = 21
	CodeSignatureMissingInManifest     ErrorCode = 22
	CodeDownloadManifestParseError     ErrorCode = 23
	CodeDownloadOperationExecution     ErrorCode = 28
	CodeDownloadOperationHashMismatch  ErrorCode = 29
	CodeOmahaResponseInvalid           ErrorCode = 34
	CodeRollbackError                  ErrorCode = 44
)

// Event is one report to the server.
type Event struct {
	Type   EventType
	Result EventResult
	// Code is sent when Result is EventResultError.
	Code ErrorCode
	// PreviousVersion is sent with EventResultSuccessReboot: the version
	// the node ran before the update it now booted.
	PreviousVersion string
}

// The events of one update, in the order update_engine sends them.

// EventDownloadStarted (13/1): the download began.
func EventDownloadStarted() Event {
	return Event{Type: EventTypeUpdateDownloadStart, Result: EventResultSuccess}
}

// EventDownloaded (14/1): the payload is downloaded.
func EventDownloaded() Event {
	return Event{Type: EventTypeUpdateDownloadFinish, Result: EventResultSuccess}
}

// EventInstalled (3/1): the update is installed in the passive slot and
// waits for a reboot.
func EventInstalled() Event {
	return Event{Type: EventTypeUpdateComplete, Result: EventResultSuccess}
}

// EventUpdateComplete (3/2): the node booted the update and it passed its
// checks; previous is the version it ran before. Nebraska counts the
// instance as updated only on this event.
func EventUpdateComplete(previous string) Event {
	return Event{Type: EventTypeUpdateComplete, Result: EventResultSuccessReboot, PreviousVersion: previous}
}

// EventFailed (3/0): the update failed with code.
func EventFailed(code ErrorCode) Event {
	return Event{Type: EventTypeUpdateComplete, Result: EventResultError, Code: code}
}

// String is "13/1", "3/0 (code 10)" or "3/2 from 1.2.3", for logs.
func (e Event) String() string {
	s := fmt.Sprintf("%d/%d", e.Type, e.Result)
	switch {
	case e.Result == EventResultError:
		s += fmt.Sprintf(" (code %d)", e.Code)
	case e.PreviousVersion != "":
		s += " from " + e.PreviousVersion
	}
	return s
}

func (e Event) request() EventRequest {
	r := EventRequest{Type: e.Type, Result: e.Result}
	switch e.Result {
	case EventResultError:
		r.ErrorCode = strconv.Itoa(int(e.Code))
	case EventResultSuccessReboot:
		r.PreviousVersion = e.PreviousVersion
	}
	return r
}
