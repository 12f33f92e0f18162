package plugins

// The wire protocol lives in pluginpb/plugin.proto; the generated Go code is
// committed. Regenerate it after editing the .proto (needs protoc,
// protoc-gen-go and protoc-gen-go-grpc on $PATH) with:
//
//	go generate ./plugins/
//
//go:generate protoc -I pluginpb --go_out=pluginpb --go_opt=paths=source_relative --go-grpc_out=pluginpb --go-grpc_opt=paths=source_relative pluginpb/plugin.proto
