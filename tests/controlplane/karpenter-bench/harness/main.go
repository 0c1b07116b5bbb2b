// Command karpenter-harness times Karpenter's scheduler (sigs.k8s.io/karpenter) on a workload file
// that our Rust engine's benchmark also reads, so both engines solve the same input. Test tooling
// only: it builds the scheduler through Karpenter's public packages, solves once per process and
// prints one JSON result on stdout.
//
// Usage: karpenter-harness WORKLOAD.json
//
// The workload format (JSON): instanceTypes (name, architecture, operatingSystems, capacity,
// overhead, labels, offerings with zone, capacityType, price, available), one nodePool (name,
// requirements, labels) and pods (ordinary Kubernetes Pod objects). Quantities are Kubernetes
// quantity strings.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	fakecr "sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/fake"
	"sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling"
	"sigs.k8s.io/karpenter/pkg/controllers/state"
	"sigs.k8s.io/karpenter/pkg/events"
	"sigs.k8s.io/karpenter/pkg/operator/injection"
	"sigs.k8s.io/karpenter/pkg/operator/logging"
	"sigs.k8s.io/karpenter/pkg/operator/options"
	kscheduling "sigs.k8s.io/karpenter/pkg/scheduling"
	"sigs.k8s.io/karpenter/pkg/test"
)

type offering struct {
	Zone         string   `json:"zone"`
	CapacityType string   `json:"capacityType"`
	Price        *float64 `json:"price"`
	Available    *bool    `json:"available"`
}

type instanceType struct {
	Name             string            `json:"name"`
	Architecture     string            `json:"architecture"`
	OperatingSystems []string          `json:"operatingSystems"`
	Capacity         map[string]string `json:"capacity"`
	Overhead         map[string]string `json:"overhead"`
	Labels           map[string]string `json:"labels"`
	Offerings        []offering        `json:"offerings"`
}

type nodePool struct {
	Name         string                           `json:"name"`
	Requirements []corev1.NodeSelectorRequirement `json:"requirements"`
	Labels       map[string]string                `json:"labels"`
}

type workload struct {
	Name          string         `json:"name"`
	InstanceTypes []instanceType `json:"instanceTypes"`
	NodePool      nodePool       `json:"nodePool"`
	Pods          []*corev1.Pod  `json:"pods"`
}

type node struct {
	InstanceType string   `json:"instanceType"`
	CapacityType string   `json:"capacityType"`
	Zones        []string `json:"zones"`
	Price        float64  `json:"pricePerHour"`
	Options      int      `json:"instanceTypeOptions"`
	Pods         []string `json:"pods"`
}

type result struct {
	Engine        string   `json:"engine"`
	Version       string   `json:"version"`
	Workload      string   `json:"workload"`
	Threads       int      `json:"threads"`
	Pods          int      `json:"pods"`
	Seconds       float64  `json:"seconds"`
	PodsPerSecond float64  `json:"podsPerSecond"`
	NodeCount     int      `json:"nodeCount"`
	PricePerHour  float64  `json:"pricePerHour"`
	Unschedulable []string `json:"unschedulable"`
	Nodes         []node   `json:"nodes"`
}

const karpenterVersion = "v1.14.1"

func resources(name string, m map[string]string) (corev1.ResourceList, error) {
	out := corev1.ResourceList{}
	for k, v := range m {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("instance type %s: %s=%q: %w", name, k, v, err)
		}
		out[corev1.ResourceName(k)] = q
	}
	return out, nil
}

func buildInstanceType(it instanceType) (*cloudprovider.InstanceType, error) {
	capacity, err := resources(it.Name, it.Capacity)
	if err != nil {
		return nil, err
	}
	overhead, err := resources(it.Name, it.Overhead)
	if err != nil {
		return nil, err
	}
	arch := it.Architecture
	if arch == "" {
		arch = "amd64"
	}
	oses := it.OperatingSystems
	if len(oses) == 0 {
		oses = []string{"linux"}
	}
	var offerings cloudprovider.Offerings
	zones, capacityTypes := []string{}, []string{}
	for _, o := range it.Offerings {
		available := o.Available == nil || *o.Available
		if o.Price == nil {
			// An offering with no known price cannot be compared; Karpenter needs one.
			continue
		}
		offerings = append(offerings, &cloudprovider.Offering{
			Requirements: kscheduling.NewLabelRequirements(map[string]string{
				v1.CapacityTypeLabelKey:  o.CapacityType,
				corev1.LabelTopologyZone: o.Zone,
			}),
			Price:     *o.Price,
			Available: available,
		})
		if available {
			zones = append(zones, o.Zone)
			capacityTypes = append(capacityTypes, o.CapacityType)
		}
	}
	reqs := kscheduling.NewRequirements(
		kscheduling.NewRequirement(corev1.LabelInstanceTypeStable, corev1.NodeSelectorOpIn, it.Name),
		kscheduling.NewRequirement(corev1.LabelArchStable, corev1.NodeSelectorOpIn, arch),
		kscheduling.NewRequirement(corev1.LabelOSStable, corev1.NodeSelectorOpIn, oses...),
		kscheduling.NewRequirement(corev1.LabelTopologyZone, corev1.NodeSelectorOpIn, zones...),
		kscheduling.NewRequirement(v1.CapacityTypeLabelKey, corev1.NodeSelectorOpIn, capacityTypes...),
	)
	for k, v := range it.Labels {
		// Labels that the cloud provider defines are well known to the scheduler, as the AWS
		// provider registers its own.
		v1.WellKnownLabels.Insert(k)
		reqs.Add(kscheduling.NewRequirement(k, corev1.NodeSelectorOpIn, v))
	}
	return &cloudprovider.InstanceType{
		Name:         it.Name,
		Requirements: reqs,
		Offerings:    offerings,
		Capacity:     capacity,
		Overhead:     &cloudprovider.InstanceTypeOverhead{KubeReserved: overhead},
	}, nil
}

func run(path string) (*result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var w workload
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var its []*cloudprovider.InstanceType
	for _, it := range w.InstanceTypes {
		built, err := buildInstanceType(it)
		if err != nil {
			return nil, err
		}
		its = append(its, built)
	}
	for _, p := range w.Pods {
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		if p.UID == "" {
			// The scheduler caches per-pod data by UID.
			p.UID = types.UID(p.Namespace + "/" + p.Name)
		}
	}
	reqs := make([]v1.NodeSelectorRequirementWithMinValues, 0, len(w.NodePool.Requirements))
	for _, r := range w.NodePool.Requirements {
		reqs = append(reqs, v1.NodeSelectorRequirementWithMinValues{Key: r.Key, Operator: r.Operator, Values: r.Values})
	}
	name := w.NodePool.Name
	if name == "" {
		name = "default"
	}
	pool := test.NodePool(v1.NodePool{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.NodePoolSpec{
			Limits: v1.Limits{
				corev1.ResourceCPU:    resource.MustParse("10000000"),
				corev1.ResourceMemory: resource.MustParse("10000000Gi"),
			},
			Template: v1.NodeClaimTemplate{
				ObjectMeta: v1.ObjectMeta{Labels: w.NodePool.Labels},
				Spec:       v1.NodeClaimTemplateSpec{Requirements: reqs},
			},
		},
	})

	ctx := options.ToContext(injection.WithControllerName(context.Background(), "provisioner"), test.Options())
	provider := fake.NewCloudProvider()
	provider.InstanceTypes = its
	client := fakecr.NewFakeClient()
	clk := &clock.RealClock{}
	cluster := state.NewCluster(clk, client, provider)
	byPool := map[string][]*cloudprovider.InstanceType{pool.Name: its}
	opts := []scheduling.Options{scheduling.NumConcurrentReconciles(5)}
	topology, err := scheduling.NewTopology(ctx, client, cluster, nil, []*v1.NodePool{pool}, byPool, w.Pods, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating topology: %w", err)
	}
	scheduler := scheduling.NewScheduler(ctx, client, []*v1.NodePool{pool}, cluster, nil, topology, byPool, nil,
		events.NewRecorder(&record.FakeRecorder{}), clk, nil, nil, opts...)

	start := time.Now()
	results, err := scheduler.Solve(ctx, w.Pods)
	elapsed := time.Since(start).Seconds()
	if err != nil {
		return nil, fmt.Errorf("solve: %w", err)
	}

	out := &result{
		Engine: "karpenter", Version: karpenterVersion, Workload: w.Name,
		Threads: runtime.GOMAXPROCS(0), Pods: len(w.Pods), Seconds: elapsed,
		PodsPerSecond: float64(len(w.Pods)) / elapsed, Unschedulable: []string{},
	}
	for p := range results.PodErrors {
		out.Unschedulable = append(out.Unschedulable, p.Namespace+"/"+p.Name)
	}
	sort.Strings(out.Unschedulable)
	for _, nc := range results.NewNodeClaims {
		// The launch takes the cheapest available offering that the claim's requirements allow,
		// over all its instance-type options.
		n := node{Price: math.Inf(1), Options: len(nc.InstanceTypeOptions)}
		for _, it := range nc.InstanceTypeOptions {
			ofs := it.Offerings.Available().Compatible(nc.Requirements)
			if len(ofs) == 0 {
				continue
			}
			c := ofs.Cheapest()
			if c.Price < n.Price {
				n.Price = c.Price
				n.InstanceType = it.Name
				n.CapacityType = c.Requirements.Get(v1.CapacityTypeLabelKey).Any()
				zones := map[string]bool{}
				for _, o := range ofs {
					zones[o.Requirements.Get(corev1.LabelTopologyZone).Any()] = true
				}
				n.Zones = n.Zones[:0]
				for z := range zones {
					n.Zones = append(n.Zones, z)
				}
				sort.Strings(n.Zones)
			}
		}
		if math.IsInf(n.Price, 1) {
			n.Price = 0
		}
		for _, p := range nc.Pods {
			n.Pods = append(n.Pods, p.Namespace+"/"+p.Name)
		}
		out.PricePerHour += n.Price
		out.Nodes = append(out.Nodes, n)
	}
	out.NodeCount = len(out.Nodes)
	return out, nil
}

func main() {
	log.SetLogger(logging.NopLogger)
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: karpenter-harness WORKLOAD.json")
		os.Exit(2)
	}
	out, err := run(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
