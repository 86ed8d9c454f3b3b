var ball = createSprite(200, 200);
ball.setAnimation("ball");
ball.x = ball.x + 10;

function draw() {
  background("orange");
  drawSprites();
}
