#!/usr/bin/env python3
"""One worker daemon of the reference design (issue 4): pika + pandas, one daemon per task kind.

    python -u bench/ref_worker.py extract|transform|load --ns NAMESPACE [--url AMQP_URL]

Started by bench/reference.py in its own working directory; the daemon runs until it is
killed (SIGTERM), as the seed's daemons do.

Faithful to the seed (the CivicDataLab article "Data Orchestration using Prefect and
RabbitMQ", shared/seed/000_*.txt, and its worker code: the `Worker` class and the generated
task template of the same authors):
- a topic exchange; the task kind is the binding key; one durable queue per daemon;
  `basic_qos(prefetch_count=2)`, manual acks, `heartbeat=0`, a BlockingConnection with
  `start_consuming()`;
- a body of exactly `get-ack` is the liveness probe: the daemon replies `worker alive` to
  `reply_to` with the same correlation id;
- any other body is JSON `{"context": ..., "data_path": ...}`; the task runs, and its result
  (a file path) or the string "Worker failed with an error - ..." is published to `reply_to`
  with the correlation id (persistent, as in the seed), then the task is acked;
- data moves between tasks as CSV files (pandas `read_csv` / `to_csv(index=False)`) named
  `pipeline_temp_files/<uuid>.csv` under the working directory; only file paths travel on
  the wire, exactly as in the seed: extract reads the source CSV and writes a temp CSV;
  transform reads it, drops `context["columns"]`, writes another temp CSV; load reads that and
  writes `context["format"]` (parquet via pyarrow, or csv) to `context["output"]`;
- the daemon prints what the seed prints ("inside if..", "[x] sent the response ...").

Changed for the benchmark:
- names carry a namespace so runs on a shared broker do not collide: exchange
  `<ns>.topic_logs`, queue `<ns>.<kind>` (the seed declares a server-named queue,
  `queue_declare('')`, which cannot be prefixed); reference.py deletes them at the end;
- the broker URL is an argument (the seed connects to `localhost`);
- the seed's extract reads "from the URL"; here `context["url"]` is a local CSV path.
"""
import argparse
import json
import os
import uuid

import pandas as pd
import pika

FAILED = "Worker failed with an error - "


def temp_csv(df):
    """Writes df where the seed's workers write it and returns the absolute path."""
    os.makedirs("pipeline_temp_files", exist_ok=True)
    name = os.path.join("pipeline_temp_files", str(uuid.uuid4()) + ".csv")
    df.to_csv(name, index=False)
    return os.path.abspath(name)


def extract(context, data_path):
    return temp_csv(pd.read_csv(context["url"]))


def transform(context, data_path):
    columns = context["columns"]
    if not isinstance(columns, list):
        columns = [columns]
    return temp_csv(pd.read_csv(data_path).drop(columns, axis=1))


def load(context, data_path):
    df = pd.read_csv(data_path)
    out = context["output"]
    if context.get("format", "csv") == "parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    return out


TASKS = {"extract": extract, "transform": transform, "load": load}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(TASKS))
    ap.add_argument("--ns", required=True, help="prefix of the exchange and queue names")
    ap.add_argument("--url", default=os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    args = ap.parse_args()
    run_task = TASKS[args.kind]

    params = pika.URLParameters(args.url)
    params.heartbeat = 0  # as the seed's Worker class and task template
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    exchange = f"{args.ns}.topic_logs"
    channel.exchange_declare(exchange=exchange, exchange_type="topic")
    queue_name = f"{args.ns}.{args.kind}"
    channel.queue_declare(queue_name, exclusive=False, durable=True)
    print("queue name----", queue_name)
    channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=args.kind)

    def execute_task(context, data_path):
        try:
            return run_task(context, data_path)
        except Exception as e:  # the seed turns every error into a reply string
            return FAILED + str(e)

    def on_request(ch, method, props, body):
        # send the worker-alive message if the request message is -> get-ack
        if body.decode("utf-8") == "get-ack":
            print("inside if..")
            ch.basic_publish(exchange="", routing_key=props.reply_to,
                             properties=pika.BasicProperties(correlation_id=props.correlation_id, delivery_mode=2),
                             body="worker alive")
            ch.basic_ack(delivery_tag=method.delivery_tag)
        else:
            # if the message is other than "get-ack" then carry out the task
            task_details = json.loads(body)
            response = execute_task(task_details["context"], task_details["data_path"])
            ch.basic_publish(exchange="", routing_key=props.reply_to,
                             properties=pika.BasicProperties(correlation_id=props.correlation_id, delivery_mode=2),
                             body=str(response))
            ch.basic_ack(delivery_tag=method.delivery_tag)
            print("[x] sent the response to the client..")

    channel.basic_qos(prefetch_count=2)
    channel.basic_consume(queue=queue_name, on_message_callback=on_request)
    print(" [x] Awaiting RPC requests", flush=True)
    channel.start_consuming()


if __name__ == "__main__":
    main()
