// gocompat drives the Go Kafka clients Debian ships (Sarama 1.22 and
// segmentio kafka-go 0.2) against a broker, one small scenario per run, for
// tests/go_clients.rs. It prints what it saw, one fact a line, and exits
// non-zero on any client error.
//
//	gocompat sarama-admin   -brokers B -version V -topic T
//	gocompat sarama-produce -brokers B -version V -topic T -n N -prefix P
//	gocompat sarama-group   -brokers B -version V -topic T -group G -n N
//	gocompat kafkago-admin   -brokers B -topic T
//	gocompat kafkago-produce -brokers B -topic T -n N -prefix P
//	gocompat kafkago-group   -brokers B -topic T -group G -n N
//
// The group scenarios consume exactly N messages ("msg <value>" lines),
// wait a moment for any extra one ("extra <value>"), commit and leave.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/Shopify/sarama"
	kafka "github.com/segmentio/kafka-go"
)

type args struct {
	brokers, version, topic, group, prefix string
	n                                      int
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: gocompat SCENARIO [flags]")
	}
	var a args
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	fs.StringVar(&a.brokers, "brokers", "127.0.0.1:9092", "bootstrap server")
	fs.StringVar(&a.version, "version", "2.1.0", "Sarama protocol baseline (Config.Version)")
	fs.StringVar(&a.topic, "topic", "", "topic")
	fs.StringVar(&a.group, "group", "", "consumer group")
	fs.StringVar(&a.prefix, "prefix", "m", "value prefix")
	fs.IntVar(&a.n, "n", 0, "messages")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail("%v", err)
	}
	switch os.Args[1] {
	case "sarama-admin":
		saramaAdmin(a)
	case "sarama-produce":
		saramaProduce(a)
	case "sarama-group":
		saramaGroup(a)
	case "kafkago-admin":
		kafkagoAdmin(a)
	case "kafkago-produce":
		kafkagoProduce(a)
	case "kafkago-group":
		kafkagoGroup(a)
	default:
		fail("unknown scenario %s", os.Args[1])
	}
}

func saramaConfig(a args) *sarama.Config {
	v, err := sarama.ParseKafkaVersion(a.version)
	if err != nil {
		fail("version %s: %v", a.version, err)
	}
	c := sarama.NewConfig()
	c.Version = v
	c.ClientID = "gocompat-sarama"
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
	c.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	return c
}

func saramaAdmin(a args) {
	admin, err := sarama.NewClusterAdmin([]string{a.brokers}, saramaConfig(a))
	if err != nil {
		fail("admin: %v", err)
	}
	defer admin.Close()
	detail := &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}
	if err := admin.CreateTopic(a.topic, detail, false); err != nil {
		fail("CreateTopic: %v", err)
	}
	fmt.Println("created", a.topic)
	topics, err := admin.ListTopics()
	if err != nil {
		fail("ListTopics: %v", err)
	}
	d, ok := topics[a.topic]
	if !ok {
		fail("ListTopics does not list %s", a.topic)
	}
	fmt.Println("listed", a.topic, "partitions", d.NumPartitions)
}

func saramaProduce(a args) {
	p, err := sarama.NewSyncProducer([]string{a.brokers}, saramaConfig(a))
	if err != nil {
		fail("producer: %v", err)
	}
	defer p.Close()
	for i := 0; i < a.n; i++ {
		msg := &sarama.ProducerMessage{
			Topic: a.topic,
			Key:   sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value: sarama.StringEncoder(fmt.Sprintf("%s-%d", a.prefix, i)),
		}
		if _, _, err := p.SendMessage(msg); err != nil {
			fail("SendMessage %d: %v", i, err)
		}
	}
	fmt.Println("produced", a.n)
}

type handler struct{ out chan string }

func (handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h handler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		s.MarkMessage(m, "")
		select {
		case h.out <- string(m.Value):
		case <-s.Context().Done():
			return nil
		}
	}
	return nil
}

// collect prints "msg" for the first n values of out, then "extra" for any
// arriving within a second after them; fails after 60 s without n.
func collect(out <-chan string, n int) {
	deadline := time.After(60 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case v := <-out:
			fmt.Println("msg", v)
		case <-deadline:
			fail("consumed %d of %d messages", got, n)
		}
	}
	quiet := time.After(time.Second)
	for {
		select {
		case v := <-out:
			fmt.Println("extra", v)
		case <-quiet:
			return
		}
	}
}

func saramaGroup(a args) {
	g, err := sarama.NewConsumerGroup([]string{a.brokers}, a.group, saramaConfig(a))
	if err != nil {
		fail("consumer group: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{a.topic}, handler{out}); err != nil {
				fail("Consume: %v", err)
			}
		}
	}()
	go func() {
		for err := range g.Errors() {
			fail("group error: %v", err)
		}
	}()
	collect(out, a.n)
	// Several commit intervals, then leave: Close commits what was marked.
	time.Sleep(500 * time.Millisecond)
	cancel()
	<-done
	if err := g.Close(); err != nil {
		fail("Close: %v", err)
	}
	fmt.Println("closed")
}

func kafkagoAdmin(a args) {
	conn, err := kafka.Dial("tcp", a.brokers)
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	err = conn.CreateTopics(kafka.TopicConfig{Topic: a.topic, NumPartitions: 2, ReplicationFactor: 1})
	if err != nil {
		fail("CreateTopics: %v", err)
	}
	fmt.Println("created", a.topic)
	parts, err := conn.ReadPartitions(a.topic)
	if err != nil {
		fail("ReadPartitions: %v", err)
	}
	fmt.Println("listed", a.topic, "partitions", len(parts))
}

func kafkagoProduce(a args) {
	w := kafka.NewWriter(kafka.WriterConfig{
		Brokers:      []string{a.brokers},
		Topic:        a.topic,
		Balancer:     &kafka.Hash{},
		BatchTimeout: 10 * time.Millisecond,
	})
	defer w.Close()
	msgs := make([]kafka.Message, a.n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:   []byte(fmt.Sprintf("k%d", i)),
			Value: []byte(fmt.Sprintf("%s-%d", a.prefix, i)),
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		fail("WriteMessages: %v", err)
	}
	fmt.Println("produced", a.n)
}

func kafkagoGroup(a args) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           []string{a.brokers},
		GroupID:           a.group,
		Topic:             a.topic,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           200 * time.Millisecond,
		HeartbeatInterval: time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
	})
	out := make(chan string, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			// Commits synchronously (CommitInterval 0) after each message.
			m, err := r.ReadMessage(ctx)
			if err != nil {
				if ctx.Err() == nil {
					fail("ReadMessage: %v", err)
				}
				return
			}
			out <- string(m.Value)
		}
	}()
	collect(out, a.n)
	cancel()
	<-done
	if err := r.Close(); err != nil {
		fail("Close: %v", err)
	}
	fmt.Println("closed")
}
