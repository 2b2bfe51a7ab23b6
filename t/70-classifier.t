#!/usr/bin/perl
# The learned score inside nginx: the same value as `llm-router score`
# for the same bodies, routing by score>X, the log's score, the explain
# location, a new model on reload, and model files that fail nginx -t.

use strict;
use warnings;

use Test::More;
use LLMRouterTest qw(json_encode json_decode);

my $cli = "$LLMRouterTest::BUILD/llm-router";
BAIL_OUT("llm-router not built: run make") unless -x $cli;

my $t = LLMRouterTest->new;
$t->mock('mini');
$t->mock('large');

# synthetic traffic: proofs need the strong model, greetings do not
my @hard = map { "Prove theorem $_ about primes and explain why it holds" } 1 .. 30;
my @easy = map { "hello there, thanks for item $_" } 1 .. 30;

sub body { json_encode({ model => 'auto', messages => [{ role => 'user', content => $_[0] }] }) }

sub train {
    my ($file, $flip) = @_;
    my $data = join '', map {
        my $hard = $_ < @hard;
        my $text = $hard ? $hard[$_] : $easy[$_ - @hard];
        json_encode({ request => json_decode(body($text)),
                      label => ($hard xor $flip) ? 1 : 0 }) . "\n";
    } 0 .. @hard + @easy - 1;
    my $in = $t->write_file("$file.jsonl", $data);
    system($cli, 'train', '--holdout', 0, '--epochs', 5, '--out',
           $t->prefix . "/$file", $in) == 0
        or die "llm-router train failed\n";
}

train('model');
my $model = $t->prefix . '/model';

my $conf = <<'EOF';
llm_router_model mini  { url %%URL_mini%%;  model m-mini;  auth none; price 1 2; }
llm_router_model large { url %%URL_large%%; model m-large; auth none; price 10 20; }
log_format llm escape=none '$llm_router_log';

server {
    listen 127.0.0.1:%%PORT%%;

    llm_router_classifier %%PREFIX%%/model;

    location = /v1/chat/completions {
        %%ROUTE_HEADERS%%
        llm_router on;
        llm_router_rule learned score>0.5 large;
        llm_router_default mini;
        add_header X-Score $llm_router_score always;
        access_log %%PREFIX%%/llm.log llm;
        proxy_pass $llm_router_url;
    }

    location = /explain {
        llm_router_explain;
        llm_router_rule learned score>0.5 large;
        llm_router_default mini;
        access_log %%PREFIX%%/explain.log llm;
    }
}
EOF

$t->config($conf)->run;

my @texts = (@hard[0 .. 4], @easy[0 .. 4], 'Prove that hello is a theorem', 'x');

# the CLI's scores of the same bodies
my $ids = join '', map { json_encode({ id => $_, request => json_decode(body($texts[$_])) }) . "\n" }
                   0 .. $#texts;
my $in = $t->write_file('score.jsonl', $ids);
my %cli = map { my $r = json_decode($_); ($r->{id} => $r->{score}) }
          split /\n/, `'$cli' score --model '$model' '$in'`;

is scalar(keys %cli), scalar(@texts), 'llm-router scored every body';

my (@nginx, @routes);
for my $i (0 .. $#texts) {
    my $r = $t->http(method => 'POST', path => '/v1/chat/completions', body => body($texts[$i]));
    push @nginx, $r->{headers}{'x-score'};
    push @routes, LLMRouterTest::route_of($r);
}

is_deeply \@nginx, [map { sprintf '%.6f', $cli{$_} } 0 .. $#texts],
          '$llm_router_score is what llm-router score gives, to the digit';

my @want = map { $cli{$_} > 0.5 ? 'large' : 'mini' } 0 .. $#texts;
is_deeply [map { (split m{/}, $_)[0] } @routes], \@want, 'score>0.5 routes to large';
ok scalar(grep { $_ eq 'large' } @want[0 .. 4]) == 5 && !grep({ $_ eq 'large' } @want[5 .. 9]),
   'the model tells proofs from greetings';

my @records = map { $t->next_record('llm.log') } 0 .. $#texts;
is_deeply [map { sprintf '%.6f', $_->{score} } @records], \@nginx, 'the log has the score';
is_deeply [map { $_->{rule} } @records], [map { $_ eq 'large' ? 'learned' : 'default' } @want],
          'the log names the rule';

# explain: the decision, and nothing upstream
my $before = scalar(() = $t->requests('large')) + scalar(() = $t->requests('mini'));
my $r = $t->http(method => 'POST', path => '/explain', body => body($hard[0]));
my $d = json_decode($r->{body});
is_deeply [$r->{status}, $r->{headers}{'content-type'}, $d->{model}, $d->{rule},
           sprintf('%.6f', $d->{score})],
          [200, 'application/json', 'large', 'learned', sprintf('%.6f', $cli{0})],
          'explain answers the decision';
is scalar(() = $t->requests('large')) + scalar(() = $t->requests('mini')), $before,
   'explain sends nothing upstream';
ok $d->{prompt_tokens} > 0 && $d->{est_cost_usd} > 0 && $d->{url} =~ m{^http://},
   'explain has the estimate, the cost and the url';
my $x = $t->next_record('explain.log');
is_deeply [@$x{qw(model rule usage_source cost_usd status)}], ['large', 'learned', 'none', 0, 200],
          'an explained request costs nothing in the log';

# a reload reads the file again: a model trained the other way round
train('model', 1);
ok $t->reload, 'reloaded';
$r = $t->http(method => 'POST', path => '/v1/chat/completions', body => body($hard[0]));
ok $r->{headers}{'x-score'} < 0.5 && LLMRouterTest::route_of($r) eq 'mini/default',
   'the new model is in use after reload';

$t->stop;

# model files that must fail nginx -t, with the reason; no mocks needed
(my $static = $conf) =~ s{%%URL_\w+%%}{http://127.0.0.1:9/v1/chat/completions}g;
my $good = do { local $/; open my $fh, '<:raw', $model or die; <$fh> };

my @bad = (
    ['truncated', substr($good, 0, length($good) - 10), qr/truncated classifier file/],
    ['corrupt', substr($good, 0, 100) . chr(ord(substr($good, 100, 1)) ^ 1) . substr($good, 101),
     qr/corrupt classifier file: bad checksum/],
    ['another version', substr($good, 0, 8) . "\x07" . substr($good, 9), qr/classifier file version 7/],
    ['not a model', "hello\n", qr/not a classifier file/],
);

for my $b (@bad) {
    my ($name, $bytes, $re) = @$b;
    my $u = LLMRouterTest->new;
    $u->write_file('model', $bytes);
    $u->config($static);
    my ($ok, $out) = $u->nginx_test;
    ok !$ok, "nginx -t fails on a $name model";
    like $out, qr/llm_router_classifier "[^"]*model": $re/, "  and says why";
}

my $u = LLMRouterTest->new;
$u->config($static);
my ($ok, $out) = $u->nginx_test;
ok !$ok && $out =~ /llm_router_classifier: open\(\) "[^"]*model" failed/, 'a missing model file fails nginx -t';

(my $noclf = $static) =~ s/llm_router_classifier[^\n]*//;
$u = LLMRouterTest->new;
$u->config($noclf);
($ok, $out) = $u->nginx_test;
ok !$ok && $out =~ /a "score" condition needs "llm_router_classifier" in "llm_router_rule" in \S+:\d+/,
   'score>X without a classifier fails nginx -t';

(my $history = $static) =~ s/llm_router on;/llm_router on; llm_router_history 2;/;
$u = LLMRouterTest->new;
$u->write_file('model', $good);
$u->config($history);
($ok, $out) = $u->nginx_test;
ok !$ok && $out =~ /llm_router_classifier was trained with a history of 6 messages, but llm_router_history is 2/,
   'a history other than the model\'s fails nginx -t';

(my $both = $static) =~ s/llm_router_explain;/llm_router_explain;\n        proxy_pass http:\/\/127.0.0.1:9;/;
$u = LLMRouterTest->new;
$u->write_file('model', $good);
$u->config($both);
($ok, $out) = $u->nginx_test;
ok !$ok && $out =~ /"llm_router_explain" and another content handler such as "proxy_pass" are in the same location "\/explain"/,
   'explain and proxy_pass in one location fail nginx -t';

done_testing;
