// Command podsweep stops and removes every pod sandbox of a CRI runtime, as
// `crictl stopp` + `crictl rmp` would: the runtime then tears down each pod's network (CNI DEL),
// namespaces and mounts. scripts/k8s/down.sh runs it once the kubelet is stopped, before the
// runtime itself stops.
//
//	podsweep unix:///path/to/containerd.sock
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: podsweep unix:///path/to/cri.sock")
		os.Exit(2)
	}
	if err := sweep(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "podsweep: %v\n", err)
		os.Exit(1)
	}
}

func sweep(endpoint string) error {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	list, err := client.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes at %s: %w", endpoint, err)
	}
	var failed []string
	for _, sandbox := range list.Items {
		name := sandbox.Metadata.Namespace + "/" + sandbox.Metadata.Name
		id := sandbox.Id
		if _, err := client.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			failed = append(failed, fmt.Sprintf("stop %s: %v", name, err))
			continue
		}
		if _, err := client.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			failed = append(failed, fmt.Sprintf("remove %s: %v", name, err))
		}
	}
	fmt.Printf("podsweep: %d pod sandboxes stopped and removed\n", len(list.Items)-len(failed))
	if len(failed) > 0 {
		return fmt.Errorf("%d failed: %v", len(failed), failed)
	}
	return nil
}
