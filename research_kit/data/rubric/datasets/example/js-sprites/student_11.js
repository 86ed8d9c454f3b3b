var paddle = createSprite(200, 380, 80, 10);
paddle.shapeColor = "white";
var ball = createSprite(200, 200, 15, 15);
ball.shapeColor = "yellow";
ball.velocityX = 3;
ball.velocityY = 4;

function draw() {
  background("black");
  if (keyDown("left")) {
    paddle.x = paddle.x - 6;
  }
  if (keyDown("right")) {
    paddle.x = paddle.x + 6;
  }
  if (ball.x < 0 || ball.x > 400) {
    ball.velocityX = -ball.velocityX;
  }
  if (ball.y < 0 || ball.isTouching(paddle)) {
    ball.velocityY = -ball.velocityY * 1.05;
    ball.shapeColor = rgb(randomNumber(0, 255), 200, 100);
  }
  drawSprites();
}
